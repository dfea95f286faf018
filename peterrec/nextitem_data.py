"""Next-item data: click log -> vocabulary -> leave-last-out split -> training windows and eval arrays.

Everything a pretraining (or same-domain finetuning) run needs, prepared once, before any run directory
is created, so a malformed input never leaves a half-made run behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from peterrec.checkpoint import sha256_file, sha256_text
from peterrec.config import DataConfig
from peterrec.data import (
    Vocabulary,
    filter_min_length,
    group_sequences,
    read_interactions,
    read_peterrec_lines,
    training_windows,
)
from peterrec.errors import DataError
from peterrec.evaluation import pad_histories

logger = logging.getLogger(__name__)


@dataclass
class NextItemData:
    """Encoded sequences and the leave-last-out evaluation arrays (item ids, left-padded)."""

    vocab: Vocabulary
    users: list[str]
    train: list[np.ndarray]  # per user: all but the last two items
    valid_histories: np.ndarray
    valid_targets: np.ndarray
    test_histories: np.ndarray
    test_targets: np.ndarray
    fingerprint: str

    @property
    def num_items(self) -> int:
        return len(self.vocab)

    def stats(self) -> dict:
        lengths = np.array([len(s) + 2 for s in self.train])
        return {
            "users": len(self.users),
            "items": self.num_items,
            "interactions": int(lengths.sum()),
            "mean_length": round(float(lengths.mean()), 2),
            "max_length": int(lengths.max()),
        }


def data_fingerprint(config: DataConfig) -> str:
    """sha256 of the input file's bytes and the options that shape the data."""
    options = {k: v for k, v in asdict(config).items() if k != "path"}
    return sha256_text(sha256_file(config.path) + json.dumps(options, sort_keys=True))


def read_user_sequences(config: DataConfig) -> dict[str, list[str]]:
    """Per-user item-id strings in time order, from any supported format."""
    if not Path(config.path).is_file():
        raise DataError(f"{config.path}: file not found; set data.path to your click log")
    if config.format == "peterrec_lines":
        rows = read_peterrec_lines(config.path)
        return {f"line{i + 1}": src for i, (src, _target) in enumerate(rows) if src}
    interactions = read_interactions(
        config.path,
        format=config.format,
        user_column=config.user_column,
        item_column=config.item_column,
        time_column=config.time_column,
        separator=config.separator,
    )
    return group_sequences(interactions)


def load_next_item_data(config: DataConfig, vocab: Vocabulary | None = None) -> NextItemData:
    """Read, filter, split and encode. A given ``vocab`` (a pretrained one) is reused, not rebuilt."""
    raw = filter_min_length(read_user_sequences(config), config.min_length, config.path)
    users = list(raw)
    if vocab is None:
        # Built from whole sequences (as RecBole does): an item first clicked in a user's last
        # position must still be rankable. Only the id order (frequency) sees those clicks.
        vocab = Vocabulary.build(raw[u] for u in users)
    vocab.unknown_count = 0
    encoded = {u: vocab.encode(raw[u]) for u in users}
    if vocab.unknown_count:
        logger.warning(
            "%s: %d interactions name items outside the vocabulary and were mapped to [UNK]",
            config.path,
            vocab.unknown_count,
        )
    train = [encoded[u][:-2] for u in users]
    return NextItemData(
        vocab=vocab,
        users=users,
        train=train,
        valid_histories=pad_histories(train),
        valid_targets=np.array([encoded[u][-2] for u in users], dtype=np.int64),
        test_histories=pad_histories([encoded[u][:-1] for u in users]),
        test_targets=np.array([encoded[u][-1] for u in users], dtype=np.int64),
        fingerprint=data_fingerprint(config),
    )


def make_windows(train: list[np.ndarray], items_per_window: int, path: str) -> list[np.ndarray]:
    """Training chunks of at most ``items_per_window`` items covering every target once."""
    windows = training_windows(train, items_per_window - 1)
    if not windows:
        raise DataError(
            f"{path}: no user has a training sequence of two or more items (a user needs at least 4 "
            "clicks: the last two are held out for validation and test); use a log with longer sequences"
        )
    return windows
