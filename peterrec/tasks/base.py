"""What every downstream task is (:class:`Task`) and what the supervised ones share: user splits, encoded
inputs, batches of examples.

Commands drive every task through the :class:`Task` protocol and never branch on its name: a task builds its
head, computes the loss of a batch, evaluates a split, scores its simple baselines, describes itself for
the manifest and saves the files it needs beside the weights. Class methods serve a finished run, where
the data is not read again: the head of a recorded task, extra files to load, and what ``recommend`` and
``embed`` print for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from peterrec.config import FinetuneConfig
from peterrec.data import fold_users, left_pad, split_users
from peterrec.data.next_item import read_user_sequences
from peterrec.data.sequences import drop_clicks, trim_shared_padding
from peterrec.errors import ConfigError
from peterrec.model.transfer import TransferModel
from peterrec.tokens import NUM_SPECIAL_TOKENS, PAD

logger = logging.getLogger(__name__)


class Task(Protocol):
    """A downstream task built from a finetune config on a loaded backbone run."""

    kind: ClassVar[str]  # the task.type name
    default_monitor: ClassVar[str]  # what train.monitor 'auto' watches
    baseline_names: ClassVar[tuple[str, ...]]  # the rows of baselines(), in order

    def __len__(self) -> int:
        """Training examples per epoch."""

    def make_head(self, base) -> nn.Module:
        """A new head for this task on top of ``base`` (a loaded backbone run)."""

    def step_loss(self, model, indices: np.ndarray, generator, device) -> tuple[torch.Tensor, int, int]:
        """Mean loss of the training batch ``indices``, its real input tokens and its loss terms."""

    def evaluate(self, model, split: str, device, batch_size: int = 256) -> tuple[dict, dict]:
        """``({split}/metric: value}, per-user outputs)`` recomputed from the model. The per-user outputs
        hold per-user metric values and may hold ``users`` (each example's user, for pooling
        cross-validation folds), ``labels`` and ``probabilities`` (classifiers)."""

    def baselines(self) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
        """The task's simple baselines on the same split and protocol: their metrics, and their per-user
        test outputs (as :meth:`evaluate` gives them, without ``users``)."""

    def describe(self) -> dict:
        """What the manifest records about the task (``type`` first); :meth:`load_head` reads it back."""

    def save_files(self, run_dir: Path) -> list[str]:
        """Write the files this task needs beside the weights; return their names (they get hashed)."""

    @classmethod
    def resolve_monitor(cls, task_config, monitor: str) -> str:
        """The metric early stopping watches: ``auto`` means :attr:`default_monitor`."""

    @classmethod
    def main_metric(cls, columns: list[str]) -> tuple[str, str]:
        """(table column, per-user key) that compare tables and confidence intervals are about."""

    @classmethod
    def protocol(cls, info: dict) -> str:
        """One phrase naming what is measured, for the note under a compare table."""

    @classmethod
    def load_head(cls, info: dict, base, extras: dict | None = None) -> nn.Module:
        """A head of the recorded shape (its weights come from the patch file; ``extras``: what
        :meth:`load_extras` read from the run, e.g. the target items' features)."""

    @classmethod
    def load_extras(cls, run_dir: Path) -> dict[str, Any]:
        """Files this task saved beside the weights, loaded (e.g. the target vocabulary)."""

    @classmethod
    def model_inputs(cls, run, encoded: list[np.ndarray]) -> torch.Tensor:
        """Left-padded model inputs for users' encoded source sequences."""

    @classmethod
    def recommend(cls, run, users: list[str], inputs: torch.Tensor, top_k: int) -> Iterator[dict]:
        """One JSON-ready record per user: top-k items with scores, or label probabilities."""

    @classmethod
    def user_vectors(cls, run, inputs: torch.Tensor) -> torch.Tensor:
        """User representations (B, C)."""


@dataclass
class UserSplit:
    """One split's users, their encoded source sequences (left-padded) and per-example targets.

    ``rows[i]`` is the user row (into ``inputs``) of example ``i``; ``targets[i]`` its target (a class
    index or a target item id). A user may contribute several examples (every target click).
    """

    users: list[str]
    inputs: np.ndarray
    rows: np.ndarray
    targets: np.ndarray
    sequences: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.targets)


def split_task_users(users: list[str], config: FinetuneConfig) -> dict[str, list[str]]:
    """Users split by ``task.split_seed`` (fixed across seeds), or fold ``task.fold`` of ``task.folds``;
    ``train_fraction`` keeps a subset of train."""
    task = config.task
    if task.folds > 1:
        valid_share = task.split[1] / (task.split[0] + task.split[1])
        train, valid, test = fold_users(users, task.folds, task.fold, valid_share, seed=task.split_seed)
    else:
        train, valid, test = split_users(users, tuple(task.split), seed=task.split_seed)
    fraction = config.task.train_fraction
    if fraction < 1.0:
        keep = max(1, math.ceil(fraction * len(train)))
        order = np.random.default_rng([config.task.split_seed, 1]).permutation(len(train))
        train = [train[i] for i in sorted(order[:keep])]
    return {"train": train, "valid": valid, "test": test}


def encode_sources(
    config: FinetuneConfig, base, users_wanted: set[str] | None = None
) -> dict[str, np.ndarray]:
    """Each user's source sequence as ids of the pretrained vocabulary, as the backbone's item encoder maps
    them (ID tables: unknown items become [UNK], counted, not dropped)."""
    raw = read_user_sequences(config.data)
    vocab, encoder = base.vocab, base.backbone.item_encoder
    vocab.reset_unknown_count()
    encoded = {
        u: encoder.encode(vocab, items)
        for u, items in raw.items()
        if users_wanted is None or u in users_wanted
    }
    unknown = vocab.reset_unknown_count()
    if unknown:
        logger.warning(
            "%s: %d clicks name items the pretrained vocabulary does not know; they are [UNK]",
            config.data.path,
            unknown,
        )
    return encoded


def transfer_model(backbone, head: nn.Module, strategy) -> TransferModel:
    """A :class:`TransferModel` as a config's ``strategy`` section says (pooling, trainable [CLS], layer
    mix, length scale); a pooling this backbone cannot use is a config error."""
    try:
        return TransferModel(
            backbone, head, strategy.pooling, strategy.train_cls, strategy.layer_mix, strategy.length_scale
        )
    except ValueError as exc:  # e.g. first_last on a causal backbone
        raise ConfigError(f"strategy.pooling: {exc}") from None


def top_items(scores: torch.Tensor, vocab, users: list[str], top_k: int) -> Iterator[dict]:
    """The ``top_k`` highest-scoring items of each row, decoded, with their scores (5 decimals)."""
    k = min(top_k, scores.shape[1])
    values, columns = scores.topk(k, dim=1)
    for user, vals, cols in zip(users, values.tolist(), columns.tolist(), strict=True):
        items = vocab.decode([c + NUM_SPECIAL_TOKENS for c in cols])
        yield {"user": user, "items": items, "scores": [round(v, 5) for v in vals]}


def input_matrix(sequences: list[np.ndarray], max_len: int, history: str = "recent") -> np.ndarray:
    """Model inputs of users' sequences, with one slot per window left free for [CLS].

    ``recent``: (U, L) with the last ``L = max_len - 1`` items, left-padded. ``full``: (U, W, L), each
    sequence cut into consecutive windows of L items ending at its newest item (the oldest window is the
    short, left-padded one), users with fewer windows padded with all-[PAD] windows in front.
    """
    width = max(1, max_len - 1)
    if history == "recent":
        return left_pad(sequences, width, pad=PAD)
    windows = [history_windows(np.asarray(s), width) for s in sequences]
    most = max((len(w) for w in windows), default=1)
    out = np.full((len(sequences), most, width), PAD, dtype=np.int64)
    for row, user_windows in enumerate(windows):
        out[row, most - len(user_windows) :] = user_windows
    return out


def model_batch(inputs: np.ndarray, device) -> torch.Tensor:
    """Left-padded model inputs (B, L) as a tensor without the [PAD] columns every row shares; windows
    (B, W, L) as they are."""
    batch = torch.as_tensor(inputs, device=device)
    return trim_shared_padding(batch) if batch.dim() == 2 else batch


def as_rows(inputs: torch.Tensor) -> torch.Tensor:
    """(B, L) as it is; windows (B, W, L) as one left-padded row per user (B, W·L), for simple baselines."""
    return inputs.reshape(len(inputs), -1) if inputs.dim() == 3 else inputs


def history_windows(sequence: np.ndarray, width: int) -> np.ndarray:
    """(W, width): the sequence in consecutive windows ending at its last item, the first one left-padded."""
    count = max(1, -(-len(sequence) // width))
    padded = np.full(count * width, PAD, dtype=np.int64)
    if len(sequence):
        padded[-len(sequence) :] = sequence
    return padded.reshape(count, width)


class TaskDefaults:
    """What most tasks do the same way; a task overrides what it does differently."""

    kind: ClassVar[str]
    default_monitor: ClassVar[str] = "valid/ndcg@10"

    def save_files(self, run_dir: Path) -> list[str]:
        return []

    @classmethod
    def resolve_monitor(cls, task_config, monitor: str) -> str:
        return cls.default_monitor if monitor == "auto" else monitor

    @classmethod
    def main_metric(cls, columns: list[str]) -> tuple[str, str]:
        return next(c for c in columns if c.endswith("ndcg@10")), "ndcg@10"

    @classmethod
    def load_extras(cls, run_dir: Path) -> dict[str, Any]:
        return {}


class SupervisedTask(TaskDefaults):
    """A task whose examples are (user row, target) pairs; subclasses define head, loss and metrics.

    Its input is a user's source sequence, read through the task's [CLS] position.
    """

    kind: ClassVar[str] = "supervised"

    def __init__(self, splits: dict[str, UserSplit], batch_size: int, click_dropout: float = 0.0):
        self.splits = splits
        self.batch_size = batch_size
        self.click_dropout = click_dropout  # training inputs only: evaluation reads every click

    def make_head(self, channels: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def example_loss(self, model, inputs, targets, generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.splits["train"])

    def step_loss(self, model, indices: np.ndarray, generator, device) -> tuple[torch.Tensor, int, int]:
        """Mean loss of one training batch, its number of real input tokens and of loss terms; with
        ``click_dropout``, each input click is dropped with that probability (a fresh draw every step)."""
        inputs, targets = self.batch("train", indices, device)
        if self.click_dropout:
            inputs = model_batch(drop_clicks(inputs, self.click_dropout, generator), device)
        loss = self.example_loss(model, inputs, targets, generator)
        return loss, int((inputs != PAD).sum()), self.loss_terms(targets)

    def loss_terms(self, targets: torch.Tensor) -> int:
        """How many terms the batch's mean loss averages: one per example unless a task says otherwise."""
        return len(targets)

    def batch(self, split: str, indices: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of examples ``indices``; [PAD] columns shared by every row are dropped (exact:
        [PAD] positions are zero at every layer), so a long window costs what its longest row needs."""
        part = self.splits[split]
        inputs = model_batch(part.inputs[part.rows[indices]], device)
        return inputs, torch.as_tensor(part.targets[indices], device=device)

    def describe(self) -> dict:
        return {
            "type": self.kind,
            **{name: {"users": len(s.users), "examples": len(s)} for name, s in self.splits.items()},
        }

    @classmethod
    def model_inputs(cls, run, encoded: list[np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(input_matrix(encoded, run.config.data.max_len, run.config.task.history))

    @classmethod
    def user_vectors(cls, run, inputs: torch.Tensor) -> torch.Tensor:
        return run.model.user_representation(inputs)
