"""Cross-domain cold-start recommendation: source clicks predict items of a new target vocabulary.

Protocol (docs/protocols.md): input = all of a user's source clicks (the newest ``max_len - 1``);
training examples = every target click of training users; the positive of a validation or test user is
their last target click; full ranking over all target items, none excluded. ``eval: sampled-99`` ranks
the positive among 99 uniformly sampled other target items instead, and its metric names say so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from peterrec.checkpoint import save_weights
from peterrec.choices import EVAL_SPLITS, SPLITS
from peterrec.config import FinetuneConfig
from peterrec.data import Vocabulary, group_sequences, left_pad, read_interactions, read_peterrec_lines
from peterrec.errors import ConfigError, DataError
from peterrec.evaluation.baselines import CooccurrenceKNNScorer, PopularityScorer
from peterrec.evaluation.content_baselines import ContentKNNScorer, RandomScorer
from peterrec.evaluation.metrics import per_user_ranking_metrics, ranking_metrics, sampled_ranks, target_ranks
from peterrec.item_content import load_feature_table, read_texts
from peterrec.model.content_encoder import FeatureTable
from peterrec.model.transfer import TransferModel
from peterrec.tasks.base import (
    SupervisedTask,
    UserSplit,
    as_rows,
    encode_sources,
    input_matrix,
    split_task_users,
    top_items,
)
from peterrec.tokens import NUM_SPECIAL_TOKENS, PAD

SAMPLED_NEGATIVES = 99
TARGET_VOCAB_FILE = "target_vocab.json"
TARGET_FEATURES_FILE = "target_item_features.safetensors"  # content backbones: the target items' features


def target_features(config: FinetuneConfig, base, target_vocab: Vocabulary) -> FeatureTable | None:
    """The target items' content features, by the backbone's featurizer (None for ID backbones).

    The text comes from ``task.items`` or else the backbone's ``model.text.items``, read with its columns."""
    if base.content is None:
        return None
    text_config = base.config.model.text
    path = config.task.items or text_config.items
    texts = read_texts(text_config, path)
    items = target_vocab.decode(range(NUM_SPECIAL_TOKENS, len(target_vocab) + NUM_SPECIAL_TOKENS))
    return base.content.rows_for(items, texts, text_config.missing, str(path or text_config.vectors))


def target_head(base, num_target_items: int, features: FeatureTable | None) -> torch.nn.Module:
    """The backbone's item encoder makes the head (content encoders also take the target items' features;
    an encoder written for ID tables is called as before)."""
    encoder = base.backbone.item_encoder
    if features is None:
        return encoder.make_target_head(num_target_items)
    return encoder.make_target_head(num_target_items, features)


def _same(inputs: torch.Tensor) -> torch.Tensor:
    return inputs


class _ModelScorer:
    """A model as a baseline scorer (``scores(inputs)``), on the device of its parameters."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)


def read_target_sequences(config: FinetuneConfig) -> dict[str, list[str]]:
    """Target clicks per user: from ``task.target``, or the target part of PeterRec lines (``src,,tgt``)."""
    data = config.data
    if config.task.target is None:
        rows = read_peterrec_lines(data.path)
        return {f"line{i + 1}": target for i, (_src, target) in enumerate(rows) if target}
    interactions = read_interactions(
        config.task.target,
        user_column=data.user_column,
        item_column=data.item_column,
        time_column=data.time_column,
        separator=data.separator,
    )
    return group_sequences(interactions)


class ColdRecTask(SupervisedTask):
    """Target items are scored by dot product with a new target-item table (the head)."""

    kind = "coldrec"
    # content_knn and zero_shot: only with a content backbone (model.item_encoder text / id+text)
    baseline_names = (
        "random",
        "popularity",
        "cooccurrence_knn",
        "cooccurrence_knn_cosine",
        "content_knn",
        "zero_shot",
    )

    def __init__(self, config: FinetuneConfig, base):
        targets_raw = read_target_sequences(config)
        sources = encode_sources(config, base)
        users = [u for u in targets_raw if u in sources and len(sources[u])]
        if len(users) < 10:
            raise DataError(
                f"{config.task.target}: only {len(users)} users have both source clicks "
                f"({config.data.path}) and target clicks; check that both files use the same user ids"
            )
        self.target_vocab = Vocabulary.build(targets_raw[u] for u in users)
        self.loss, self.eval_protocol = config.task.loss, config.task.eval
        self.num_source_items = len(base.vocab)
        self.seed = config.task.split_seed
        targets = {u: self.target_vocab.encode(targets_raw[u]) for u in users}
        splits = {}
        # Split every user with source clicks (as the profile tasks do), then keep those with target
        # clicks: a user is in the same split for every task built from one log.
        with_target = set(users)
        for name, everyone in split_task_users(list(sources), config).items():
            part = [u for u in everyone if u in with_target]
            seqs = [sources[u] for u in part]
            if name == "train":
                # One example per user holding all of their target clicks (padded with PAD): the
                # source sequence is encoded once per user instead of once per click.
                rows = np.arange(len(part))
                tgts = left_pad([targets[u] for u in part], max(len(targets[u]) for u in part), pad=PAD)
            else:
                rows, tgts = np.arange(len(part)), np.array([targets[u][-1] for u in part])
            inputs = input_matrix(seqs, config.data.max_len, config.task.history)
            splits[name] = UserSplit(part, inputs, rows, tgts, seqs)
        self.train_targets = [targets[u] for u in splits["train"].users]
        self.base = base
        self.target_features = target_features(config, base, self.target_vocab)
        super().__init__(splits, config.train.batch_size, config.task.click_dropout)

    @property
    def num_target_items(self) -> int:
        return len(self.target_vocab)

    def make_head(self, base) -> torch.nn.Module:
        """The item encoder's cold-start head over the target items (ID tables: a new target table; content
        encoders: the target items' features through the encoder)."""
        return target_head(base, self.num_target_items, self.target_features)

    def example_loss(self, model, inputs, targets, generator) -> torch.Tensor:
        """Mean loss over every target click in the batch; ``targets`` is (B, T), PAD-padded."""
        clicked = targets != PAD
        columns = (targets - NUM_SPECIAL_TOKENS).clamp(min=0)
        if self.loss == "softmax":
            log_probs = torch.log_softmax(model(inputs).float(), dim=-1).gather(1, columns)
            return -(log_probs * clicked).sum() / clicked.sum()
        # bce1 (the original): one uniformly sampled negative per positive, binary cross-entropy.
        user = model.user_representation(inputs)
        negatives = torch.randint(0, self.num_target_items, columns.shape, generator=generator)
        pairs = torch.cat([columns, negatives.to(columns.device)], dim=1)
        scores = model.head.logits_for(user, pairs).float()
        labels = torch.cat([torch.ones_like(columns), torch.zeros_like(columns)], dim=1).float()
        weights = torch.cat([clicked, clicked], dim=1).float()
        losses = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
        return (losses * weights).sum() / weights.sum()

    def loss_terms(self, targets: torch.Tensor) -> int:
        """One term per target click (bce1: its negative doubles every click alike)."""
        return int((targets != PAD).sum())

    def sampled_negatives(self, split: str) -> torch.Tensor:
        """Fixed 99 negatives per evaluated user (never the positive), the same for every model."""
        positives = self.splits[split].targets - NUM_SPECIAL_TOKENS
        rng = np.random.default_rng([self.seed, SPLITS.index(split), 99])
        draws = rng.integers(0, self.num_target_items - 1, size=(len(positives), SAMPLED_NEGATIVES))
        return torch.as_tensor(draws + (draws >= positives[:, None]))

    def rank(self, scorer, split: str, device, batch_size: int = 256) -> np.ndarray:
        part = self.splits[split]
        negatives = self.sampled_negatives(split) if self.eval_protocol == "sampled-99" else None
        ranks = []
        with torch.inference_mode():
            for start in range(0, len(part), batch_size):
                idx = np.arange(start, min(start + batch_size, len(part)))
                inputs, targets = self.batch(split, idx, device)
                scores, columns = scorer(inputs).float(), targets - NUM_SPECIAL_TOKENS
                if negatives is None:
                    ranks.append(target_ranks(scores, columns).cpu())
                else:
                    ranks.append(sampled_ranks(scores, columns, negatives[idx].to(scores.device)).cpu())
        return torch.cat(ranks).numpy()

    def _label(self, split: str) -> str:
        return f"{split}/" if self.eval_protocol == "full" else f"{split}/sampled99_"

    def evaluate(self, model, split: str, device, batch_size: int = 256) -> tuple[dict, dict]:
        model.eval()
        ranks = self.rank(model, split, device, batch_size)
        metrics = {self._label(split) + k: v for k, v in ranking_metrics(ranks).items()}
        return metrics, {"users": self.example_users(split), **per_user_ranking_metrics(ranks)}

    def example_users(self, split: str) -> list[str]:
        """The user of each evaluated example of ``split``, in order."""
        part = self.splits[split]
        return [part.users[row] for row in part.rows]

    def baselines(self) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
        train_sources = self.splits["train"].sequences
        args = (train_sources, self.train_targets, self.num_source_items, self.num_target_items)
        scorers = {
            "random": RandomScorer(self.num_target_items, seed=self.seed),
            "popularity": PopularityScorer(self.train_targets, self.num_target_items),
            # plain co-occurrence counts (the usual kNN row) and the cosine-normalised, stronger variant
            "cooccurrence_knn": CooccurrenceKNNScorer(*args, normalization="count"),
            "cooccurrence_knn_cosine": CooccurrenceKNNScorer(*args, normalization="cosine"),
        }
        if self.target_features is not None:
            scorers.update(self.content_scorers())
        rows, test_values = {}, {}
        for name, scorer in scorers.items():
            rows[name] = {}
            device, view = (self.base_device, _same) if isinstance(scorer, _ModelScorer) else ("cpu", as_rows)
            for split in EVAL_SPLITS:
                ranks = self.rank(lambda inputs, s=scorer, v=view: s.scores(v(inputs)), split, device)
                rows[name].update({self._label(split) + k: v for k, v in ranking_metrics(ranks).items()})
            test_values[name] = per_user_ranking_metrics(ranks)  # EVAL_SPLITS ends with test
        return rows, test_values

    def content_scorers(self) -> dict:
        """Rows of a content backbone: the content kNN (target items by cosine similarity of their features
        to the mean of the user's source items' features) and the zero-shot model (the pretrained backbone
        and encoder score the target items, nothing trained on the target domain)."""
        knn = ContentKNNScorer(self.base.content.features.to_matrix(), self.target_features.to_matrix())
        return {"content_knn": knn, "zero_shot": _ModelScorer(self.zero_shot_model())}

    def zero_shot_model(self) -> TransferModel:
        """The pretrained backbone reading out its next-item state, scoring the target items through its
        content encoder with a zero bias: what it predicts with no target training. (A finetune run with
        ``strategy.pooling: next_item`` starts from exactly this model.)"""
        if self.target_features is None:
            raise ConfigError(
                f"{self.base.run_dir}: zero-shot cold start needs a backbone pretrained with a content item "
                f"encoder (model.item_encoder text or id+text), not {self.base.config.model.item_encoder!r}"
            )
        return TransferModel(self.base.backbone, self.make_head(self.base), pooling="next_item").eval()

    def describe(self) -> dict:
        return {
            **super().describe(),
            "target_items": self.num_target_items,
            "loss": self.loss,
            "eval": self.eval_protocol,
        }

    @property
    def base_device(self) -> torch.device:
        return next(self.base.backbone.parameters()).device

    def save_files(self, run_dir: Path) -> list[str]:
        self.target_vocab.save(run_dir / TARGET_VOCAB_FILE)
        if self.target_features is None:
            return [TARGET_VOCAB_FILE]
        save_weights(run_dir / TARGET_FEATURES_FILE, self.target_features.tensors())
        return [TARGET_VOCAB_FILE, TARGET_FEATURES_FILE]

    @classmethod
    def resolve_monitor(cls, task_config, monitor: str) -> str:
        """Under ``eval: sampled-99`` the ranking metric names carry that label, and so does the monitor."""
        monitor = super().resolve_monitor(task_config, monitor)
        if task_config.eval == "sampled-99" and "sampled99_" not in monitor:
            monitor = monitor.replace("valid/", "valid/sampled99_", 1)
        return monitor

    @classmethod
    def protocol(cls, info: dict) -> str:
        if info.get("eval") == "sampled-99":
            return "sampled-99 ranking (the positive among 99 sampled negatives)"
        return "full ranking over all target items"

    @classmethod
    def load_head(cls, info: dict, base, extras: dict | None = None) -> torch.nn.Module:
        return target_head(base, info["target_items"], (extras or {}).get("target_features"))

    @classmethod
    def load_extras(cls, run_dir: Path) -> dict[str, Any]:
        extras: dict[str, Any] = {"target_vocab": Vocabulary.load(run_dir / TARGET_VOCAB_FILE)}
        if (run_dir / TARGET_FEATURES_FILE).is_file():
            extras["target_features"] = load_feature_table(run_dir / TARGET_FEATURES_FILE)
        return extras

    @classmethod
    def recommend(cls, run, users: list[str], inputs: torch.Tensor, top_k: int) -> Iterator[dict]:
        """Top-k target items per user (nothing excluded: the user has no target history)."""
        yield from top_items(run.model(inputs), run.extras["target_vocab"], users, top_k)
