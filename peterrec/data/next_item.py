"""Next-item data: click log -> vocabulary -> leave-last-out split -> training windows and eval arrays.

Everything a pretraining (or same-domain finetuning) run needs, prepared once, before any run directory
is created, so a malformed input never leaves a half-made run behind.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from peterrec.checkpoint import sha256_file, sha256_text
from peterrec.config import DataConfig
from peterrec.data.log_cache import UserSequences, frequency_order, load_or_build, read_in_memory
from peterrec.data.sequences import filter_min_length, training_windows
from peterrec.data.vocab import Vocabulary
from peterrec.errors import DataError
from peterrec.tokens import NUM_SPECIAL_TOKENS, PAD, UNK

logger = logging.getLogger(__name__)


class Histories:
    """Ragged histories: row ``r`` is ``values[starts[r] : starts[r] + lengths[r]]`` (item ids, oldest first).

    Views into one array (the log cache's, possibly memory-mapped), so a split costs two int64 columns, not
    a users x longest-history matrix. :meth:`tails` builds a batch's model input and :meth:`columns` its
    history exclusions; :meth:`dense` is the old left-padded matrix (small data only).
    """

    def __init__(self, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
        self.values = values
        self.starts = np.asarray(starts, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.starts.shape != self.lengths.shape:
            raise ValueError(f"{len(self.starts)} starts but {len(self.lengths)} lengths")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, row: int) -> np.ndarray:
        start = int(self.starts[row])
        return self.values[start : start + int(self.lengths[row])]

    @property
    def longest(self) -> int:
        return int(self.lengths.max()) if len(self) else 0

    def _gather(self, rows: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row in batch, rank inside the kept tail, item id) of the last ``keep[i]`` items of each row."""
        total = int(keep.sum())
        batch_row = np.repeat(np.arange(len(rows)), keep)
        within = np.arange(total) - np.repeat(np.cumsum(keep) - keep, keep)
        source = np.repeat(self.starts[rows] + self.lengths[rows] - keep, keep) + within
        return batch_row, within, np.asarray(self.values[source], dtype=np.int64)

    def tails(self, rows: np.ndarray, width: int, pad: int = PAD) -> np.ndarray:
        """(len(rows), width) int64: each row's last ``width`` items, left-padded with ``pad``."""
        rows = np.asarray(rows, dtype=np.int64)
        keep = np.minimum(self.lengths[rows], width)
        out = np.full((len(rows), width), pad, dtype=np.int64)
        batch_row, within, ids = self._gather(rows, keep)
        out[batch_row, width - np.repeat(keep, keep) + within] = ids
        return out

    def columns(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sparse (batch row, item id) pairs of every item in each row's whole history."""
        rows = np.asarray(rows, dtype=np.int64)
        batch_row, _within, ids = self._gather(rows, self.lengths[rows])
        return batch_row, ids

    def dense(self) -> np.ndarray:
        """Left-padded to the longest history (the layout ``pad_histories`` gives)."""
        return self.tails(np.arange(len(self)), max(1, self.longest))


@dataclass
class NextItemData:
    """Encoded sequences and the leave-last-out evaluation split (ragged histories, target ids)."""

    vocab: Vocabulary
    users: list[str]
    train: list[np.ndarray]  # per user: all but the last two items (int32 views into one array)
    valid_histories: Histories
    valid_targets: np.ndarray
    test_histories: Histories
    test_targets: np.ndarray
    fingerprint: str
    max_len: int | None = None  # the model reads the last max_len items; None: whole histories

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


def data_fingerprint(config: DataConfig, file_sha256: str | None = None) -> str:
    """sha256 of the input file's bytes and the options that shape the data."""
    options = {k: v for k, v in asdict(config).items() if k != "path"}
    return sha256_text((file_sha256 or sha256_file(config.path)) + json.dumps(options, sort_keys=True))


def read_user_sequences(config: DataConfig) -> dict[str, list[str]]:
    """Per-user item-id strings in time order, from any supported format."""
    if not Path(config.path).is_file():
        raise DataError(f"{config.path}: file not found; set data.path to your click log")
    return read_in_memory(config)


def _encode(
    log: UserSequences, keep: np.ndarray, vocab: Vocabulary | None
) -> tuple[np.ndarray, np.ndarray, Vocabulary]:
    """(items, offsets, vocabulary) of the kept users, ids in ``vocab`` (or a vocabulary built over them)."""
    lengths = log.lengths[keep]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    every = bool(keep.all())
    items = log.items if every else log.items[np.repeat(keep, log.lengths)]
    if vocab is None:
        if every:
            return items, offsets, log.vocab  # the cache's vocabulary is the one built over every user
        # Dropped users: the vocabulary is built over the kept sequences alone, as Vocabulary.build does.
        ranked, counts = frequency_order(items, len(log.vocab) + NUM_SPECIAL_TOKENS)
        vocab = Vocabulary([log.vocab.items[i - NUM_SPECIAL_TOKENS] for i in ranked.tolist()], counts)
    lookup = np.array([UNK] * NUM_SPECIAL_TOKENS + [vocab.id_of(i) for i in log.vocab.items], dtype=np.int32)
    encoded = lookup[items]
    vocab.unknown_count = int(np.count_nonzero(encoded == UNK))
    return encoded, offsets, vocab


USER_SUBSET_SEED = 0


def user_subset(eligible: np.ndarray, fraction: float) -> np.ndarray:
    """A mask keeping ``ceil(fraction * n)`` of the ``n`` eligible users: the first ones of a permutation
    seeded with ``USER_SUBSET_SEED``, so a smaller fraction keeps a subset of a larger one's users."""
    candidates = np.flatnonzero(eligible)
    order = np.random.default_rng(USER_SUBSET_SEED).permutation(len(candidates))
    kept = candidates[np.sort(order[: max(1, math.ceil(fraction * len(candidates)))])]
    mask = np.zeros(len(eligible), dtype=bool)
    mask[kept] = True
    return mask


def load_next_item_data(config: DataConfig, vocab: Vocabulary | None = None) -> NextItemData:
    """Read, filter, split and encode. A given ``vocab`` (a pretrained one) is reused, not rebuilt.

    The log comes from :func:`~peterrec.data.log_cache.load_or_build` (a memory-mapped cache for large
    logs); training sequences and evaluation histories are views into its item array.
    """
    file_sha256 = sha256_file(config.path) if Path(config.path).is_file() else None
    log = load_or_build(config, file_sha256=file_sha256)
    lengths = log.lengths
    sizes = {user: range(n) for user, n in zip(log.users, lengths.tolist(), strict=True)}
    kept_users = filter_min_length(sizes, config.min_length, config.path)
    keep = lengths >= config.min_length
    if config.user_fraction < 1.0:
        keep &= user_subset(keep, config.user_fraction)
        kept_users = [u for u, k in zip(log.users, keep.tolist(), strict=True) if k]
        logger.info("data.user_fraction %g: %d of the users are kept", config.user_fraction, len(kept_users))
    # Built from whole sequences (as RecBole does): an item first clicked in a user's last
    # position must still be rankable. Only the id order (frequency) sees those clicks.
    if int(lengths[keep].min()) < 2:
        raise DataError(
            f"{config.path}: a user has a single item, too few for leave-last-out; set data.min_length: 3"
        )
    items, offsets, vocab = _encode(log, keep, vocab)
    if vocab.unknown_count:
        logger.warning(
            "%s: %d interactions name items outside the vocabulary and were mapped to [UNK]",
            config.path,
            vocab.unknown_count,
        )
    starts, ends = offsets[:-1], offsets[1:]
    train = [items[s:e] for s, e in zip(starts.tolist(), (ends - 2).tolist(), strict=True)]
    return NextItemData(
        vocab=vocab,
        users=list(kept_users),
        train=train,
        valid_histories=Histories(items, starts, ends - starts - 2),
        valid_targets=np.asarray(items[ends - 2], dtype=np.int64),
        test_histories=Histories(items, starts, ends - starts - 1),
        test_targets=np.asarray(items[ends - 1], dtype=np.int64),
        fingerprint=data_fingerprint(config, file_sha256),
        max_len=config.max_len,
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
