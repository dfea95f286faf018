"""Sequence utilities: padding, filtering, user splits, leave-last-out and training windows.

Sequences are int64 id arrays, oldest item first. Padding is on the left so the last position is the newest
item (NextItNet has no positional embedding).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from peterrec.errors import DataError
from peterrec.tokens import PAD

logger = logging.getLogger(__name__)


def left_pad(seqs: Sequence[np.ndarray], max_len: int, pad: int = PAD) -> np.ndarray:
    """Stack sequences into an ``(n, max_len)`` int64 array, left-padded, keeping the **last** ``max_len``."""
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    out = np.full((len(seqs), max_len), pad, dtype=np.int64)
    if len(seqs) == 0:
        return out
    keep = np.minimum([len(s) for s in seqs], max_len)
    tails = [np.asarray(s, dtype=np.int64)[len(s) - k :] for s, k in zip(seqs, keep.tolist(), strict=True)]
    values = np.concatenate(tails)
    # Flat destination of each kept item: its row's right-aligned start plus its rank inside the tail.
    starts = np.cumsum(keep) - keep
    row_starts = np.arange(len(seqs)) * max_len + (max_len - keep)
    out.reshape(-1)[np.arange(len(values)) + np.repeat(row_starts - starts, keep)] = values
    return out


def trim_shared_padding(batch: torch.Tensor, min_width: int = 2) -> torch.Tensor:
    """Drop the leading columns of a left-padded batch (B, L) that are [PAD] in every row.

    Exact for NextItNet: [PAD] positions are zero at every layer, which is what the convolutions' own zero
    padding supplies. At least ``min_width`` columns are kept.
    """
    real_columns = (batch != PAD).any(dim=0).nonzero()
    first = int(real_columns[0]) if len(real_columns) else batch.shape[1]
    return batch[:, min(first, max(batch.shape[1] - min_width, 0)) :]


def drop_clicks(batch: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Each real click of a left-padded batch dropped with probability ``rate``, the rest kept in order and
    left-padded again (training-time augmentation of a user's history).

    ``batch`` is (B, L), or windows (B, W, L) handled one window at a time. A row that had clicks keeps its
    newest one when every draw drops them all, so no user loses the whole input. Draws come from
    ``generator`` (CPU), so a step is reproducible.
    """
    rows = batch.reshape(-1, batch.shape[-1])
    real = rows != PAD
    draws = torch.rand(rows.shape, generator=generator).to(rows.device)
    keep = real & (draws >= rate)
    keep[real.any(dim=1) & ~keep.any(dim=1), -1] = True  # left-padded: the last column is the newest click
    order = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices  # dropped first, kept after, in order
    packed = rows.gather(1, order)
    columns = torch.arange(rows.shape[1], device=rows.device)
    packed = packed.masked_fill(columns < rows.shape[1] - keep.sum(dim=1, keepdim=True), PAD)
    return packed.reshape(batch.shape)


def pad_histories(histories: Sequence[np.ndarray]) -> np.ndarray:
    """Left-pad variable-length histories to the longest one."""
    longest = max((len(h) for h in histories), default=1)
    return left_pad(list(histories), max(1, longest), pad=PAD)


def filter_min_length(sequences: dict[str, np.ndarray], min_length: int, path: str) -> dict[str, np.ndarray]:
    """Drop sequences shorter than ``min_length`` (a logged count); DataError naming ``path`` if none left."""
    kept = {user: seq for user, seq in sequences.items() if len(seq) >= min_length}
    dropped = len(sequences) - len(kept)
    if not kept:
        longest = max((len(s) for s in sequences.values()), default=0)
        raise DataError(
            f"{path}: no user has at least data.min_length={min_length} items (the longest has {longest}); "
            "lower data.min_length or use a log with longer sequences"
        )
    if dropped:
        logger.warning(
            "%s: dropped %d of %d users with fewer than %d items", path, dropped, len(sequences), min_length
        )
    return kept


def split_users(
    users: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[list[str], list[str], list[str]]:
    """Split users into (train, valid, test), deterministic in ``seed`` and independent of the input order."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    permuted = _permuted_users(users, seed, "split_users")
    a, b = np.round(np.cumsum(fractions[:2]) * len(permuted)).astype(int).tolist()
    return permuted[:a], permuted[a:b], permuted[b:]


def _permuted_users(users: Sequence[str], seed: int, caller: str) -> list[str]:
    """The users sorted, then permuted by ``seed``: the same order whatever order they came in."""
    ordered = sorted(users)
    if len(set(ordered)) != len(ordered):
        raise ValueError(f"{caller} got duplicate user ids")
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def fold_users(
    users: Sequence[str], folds: int, fold: int, valid_share: float, seed: int = 0
) -> tuple[list[str], list[str], list[str]]:
    """(train, valid, test) of fold ``fold`` of a K-fold split of users, deterministic in ``seed``.

    The users (sorted, then permuted by ``seed`` as in :func:`split_users`) are cut into ``folds`` parts of
    near-equal size; part ``fold`` is the test split, so over all folds every user is tested exactly once.
    Of the other users, the first ``round(valid_share * n)`` in permuted order are the validation split and
    the rest train.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
    if not 0.0 <= valid_share < 1.0:
        raise ValueError(f"valid_share must lie in [0, 1), got {valid_share}")
    permuted = _permuted_users(users, seed, "fold_users")
    if len(permuted) < folds:
        raise ValueError(f"{len(permuted)} users cannot make {folds} folds")
    bounds = np.linspace(0, len(permuted), folds + 1).round().astype(int)
    test = permuted[bounds[fold] : bounds[fold + 1]]
    rest = permuted[: bounds[fold]] + permuted[bounds[fold + 1] :]
    cut = int(round(valid_share * len(rest)))
    return rest[cut:], rest[:cut], test


@dataclass
class LeaveLastOut:
    """Per-user leave-last-out split: ``(user, history, target)`` examples for validation and test."""

    train: dict[str, np.ndarray]
    valid: list[tuple[str, np.ndarray, int]]
    test: list[tuple[str, np.ndarray, int]]


def leave_last_out(sequences: dict[str, np.ndarray]) -> LeaveLastOut:
    """Last item = test target, second-last = validation target, the rest = training sequence.

    Validation history is the training sequence; test history is everything but the last item. Every user
    needs at least 3 items (filter with :func:`filter_min_length` first).
    """
    split = LeaveLastOut({}, [], [])
    for user, seq in sequences.items():
        if len(seq) < 3:
            raise ValueError(f"user {user!r} has {len(seq)} items; leave-last-out needs at least 3")
        split.train[user] = seq[:-2]
        split.valid.append((user, seq[:-2], int(seq[-2])))
        split.test.append((user, seq[:-1], int(seq[-1])))
    return split


def training_windows(seqs: Sequence[np.ndarray], window: int) -> list[np.ndarray]:
    """Chop sequences into chunks of at most ``window + 1`` items for autoregressive training.

    Chunks are cut from the end backwards and overlap by one item: a chunk ``c`` is trained to predict
    ``c[1:]`` from ``c[:-1]``, and its first item is the last (predicted) item of the chunk before it.
    So every next-item target of a sequence (items 1..n-1) is a target in exactly one chunk, and the newest
    items always get the longest context. Chunks shorter than 2 items (nothing to predict) are dropped.
    The chunks are views into the inputs, oldest first within each sequence.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    out: list[np.ndarray] = []
    for seq in seqs:
        chunks = []
        end = len(seq)
        while end >= 2:
            start = max(0, end - (window + 1))
            chunks.append(seq[start:end])
            end = start + 1
        out.extend(reversed(chunks))
    return out
