"""What every downstream task shares: user splits, encoded inputs, batches of examples."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from peterrec import PAD
from peterrec.config import FinetuneConfig
from peterrec.data import Vocabulary, left_pad, split_users
from peterrec.nextitem_data import read_user_sequences

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


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
    """Users split by ``task.split_seed`` (fixed across seeds); ``train_fraction`` keeps a subset of train."""
    train, valid, test = split_users(users, tuple(config.task.split), seed=config.task.split_seed)
    fraction = config.task.train_fraction
    if fraction < 1.0:
        keep = max(1, math.ceil(fraction * len(train)))
        order = np.random.default_rng([config.task.split_seed, 1]).permutation(len(train))
        train = [train[i] for i in sorted(order[:keep])]
    return {"train": train, "valid": valid, "test": test}


def encode_sources(
    config: FinetuneConfig, vocab: Vocabulary, users_wanted: set[str] | None = None
) -> dict[str, np.ndarray]:
    """Each user's source sequence as pretrained-vocabulary ids; unknown items are counted, not dropped."""
    raw = read_user_sequences(config.data)
    vocab.reset_unknown_count()
    encoded = {
        u: vocab.encode(items) for u, items in raw.items() if users_wanted is None or u in users_wanted
    }
    unknown = vocab.reset_unknown_count()
    if unknown:
        logger.warning(
            "%s: %d clicks name items the pretrained vocabulary does not know; they are [UNK]",
            config.data.path,
            unknown,
        )
    return encoded


def input_matrix(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """The last ``max_len - 1`` items of each sequence, left-padded (one slot stays free for [CLS])."""
    return left_pad(sequences, max(1, max_len - 1), pad=PAD)


class SupervisedTask:
    """A task whose examples are (user row, target) pairs; subclasses define head, loss and metrics."""

    kind = "supervised"

    def __init__(self, splits: dict[str, UserSplit], batch_size: int):
        self.splits = splits
        self.batch_size = batch_size

    def make_head(self, channels: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def example_loss(self, model, inputs, targets, generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.splits["train"])

    def step_loss(self, model, indices: np.ndarray, generator, device) -> tuple[torch.Tensor, int]:
        """Loss of one training batch and its number of real input tokens."""
        inputs, targets = self.batch("train", indices, device)
        return self.example_loss(model, inputs, targets, generator), int((inputs != PAD).sum())

    def batch(self, split: str, indices: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        part = self.splits[split]
        inputs = torch.as_tensor(part.inputs[part.rows[indices]], device=device)
        return inputs, torch.as_tensor(part.targets[indices], device=device)

    def describe(self) -> dict:
        return {name: {"users": len(s.users), "examples": len(s)} for name, s in self.splits.items()}
