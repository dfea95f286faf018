"""Ranking and classification metrics, with ties counted against the model.

Score matrices have one column per real item: column ``j`` is item id ``j + 4`` (ids 0-3 are the special
tokens). Ranks are 0-based: rank 0 means the target scored strictly above every other candidate.

Ties count against the model: a target that ties with ``m`` other candidates is ranked below all of them, so a
constant scorer ranks every target last (HR@10 = 0 whenever there are more than 10 candidates).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from peterrec.tokens import NUM_SPECIAL_TOKENS

RanksLike = torch.Tensor | np.ndarray | Sequence[int]

__all__ = [
    "history_columns",
    "target_ranks",
    "sampled_ranks",
    "hit_rate",
    "ndcg",
    "mrr",
    "per_user_ranking_metrics",
    "ranking_metrics",
    "paired_bootstrap_ci",
    "per_user_correct",
    "per_user_log_loss",
    "balanced_log_loss",
    "classification_metrics",
]


# ------------------------------------------------------------------------------------------------ ranks


def history_columns(histories: torch.Tensor, num_items: int) -> torch.Tensor:
    """Turn item-id histories (B, H) into score-column indices for ``target_ranks(exclude=...)``.

    Pads and special ids (< 4) become -1 ("nothing to exclude"); real item ``i`` becomes column ``i - 4``.
    Raises ``ValueError`` for an id above ``num_items + 3``.
    """
    if histories.dim() != 2:
        raise ValueError(f"histories must be (B, H), got shape {tuple(histories.shape)}")
    if histories.numel() and int(histories.max()) >= num_items + NUM_SPECIAL_TOKENS:
        raise ValueError(f"history holds item id {int(histories.max())} but num_items is {num_items}")
    cols = histories.long() - NUM_SPECIAL_TOKENS
    return torch.where(cols >= 0, cols, torch.full_like(cols, -1))


def _check_scores(scores: torch.Tensor, targets: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, N), got shape {tuple(scores.shape)}")
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"targets must be ({scores.shape[0]},), got shape {tuple(targets.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; ranks would be meaningless (check the model for overflow)")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= scores.shape[1]):
        raise ValueError(
            f"target columns must lie in [0, {scores.shape[1]}), got [{int(targets.min())}, "
            f"{int(targets.max())}]; targets are column indices (item id - 4), not item ids"
        )


@torch.no_grad()
def target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """0-based rank of each user's target column under full ranking.

    Args:
        scores: (B, N) float scores, one column per candidate item.
        targets: (B,) long column index of each user's target.
        exclude: optional (B, H) long column indices to remove from the ranking (e.g. the user's history,
            see :func:`history_columns`); -1 means "none". The target itself is never excluded, even when it
            appears in ``exclude`` (a user may re-click an item).

    Returns:
        (B,) long ranks on the device of ``scores``:
        ``#(other score > target score) + #(other score == target score)`` over non-excluded columns.

    Raises:
        ValueError: on NaN scores, bad shapes or out-of-range indices.
    """
    _check_scores(scores, targets)
    targets = targets.long().to(scores.device)
    batch = torch.arange(scores.shape[0], device=scores.device)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if exclude is not None:
        exclude = exclude.long().to(scores.device)
        if exclude.dim() != 2 or exclude.shape[0] != scores.shape[0]:
            raise ValueError(f"exclude must be ({scores.shape[0]}, H), got shape {tuple(exclude.shape)}")
        if exclude.numel() and (int(exclude.min()) < -1 or int(exclude.max()) >= scores.shape[1]):
            raise ValueError(
                f"exclude columns must lie in [-1, {scores.shape[1]}), got [{int(exclude.min())}, "
                f"{int(exclude.max())}]"
            )
        # "None" (-1) entries go to an extra dummy column N, dropped afterwards.
        n = scores.shape[1]
        padded = torch.ones(scores.shape[0], n + 1, dtype=torch.bool, device=scores.device)
        padded.scatter_(1, torch.where(exclude >= 0, exclude, torch.full_like(exclude, n)), False)
        keep = padded[:, :n]
        keep[batch, targets] = True
    # Excluding by mask (rather than writing -inf) keeps an excluded column from tying with a -inf target.
    target_score = scores[batch, targets].unsqueeze(1)
    above = ((scores > target_score) & keep).sum(dim=1)
    tied = ((scores == target_score) & keep).sum(dim=1) - 1  # minus the target itself
    return above + tied


@torch.no_grad()
def sampled_ranks(scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """0-based rank of the target among itself and S sampled negatives (the ``eval: sampled-99`` protocol).

    Args:
        scores: (B, N) float scores.
        targets: (B,) long target columns.
        negatives: (B, S) long columns of sampled negatives; none may equal the user's target.

    Returns:
        (B,) long ranks in ``[0, S]``; ties with a negative count against the model.
    """
    _check_scores(scores, targets)
    negatives = negatives.long().to(scores.device)
    if negatives.dim() != 2 or negatives.shape[0] != scores.shape[0]:
        raise ValueError(f"negatives must be ({scores.shape[0]}, S), got shape {tuple(negatives.shape)}")
    if negatives.numel() and (int(negatives.min()) < 0 or int(negatives.max()) >= scores.shape[1]):
        raise ValueError(f"negative columns must lie in [0, {scores.shape[1]})")
    targets = targets.long().to(scores.device)
    if (negatives == targets.unsqueeze(1)).any():
        raise ValueError("a sampled negative equals the target; the sampler must skip the positive")
    target_score = scores.gather(1, targets.unsqueeze(1))
    return (scores.gather(1, negatives) >= target_score).sum(dim=1)


# ------------------------------------------------------------------------------------------ ranking metrics


def _ranks_numpy(ranks: RanksLike) -> np.ndarray:
    if isinstance(ranks, torch.Tensor):
        ranks = ranks.detach().cpu().numpy()
    ranks = np.asarray(ranks)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {ranks.shape}")
    if ranks.size == 0:
        raise ValueError("no ranks given: a metric over zero users is undefined")
    if (ranks < 0).any():
        raise ValueError("ranks are 0-based and must be >= 0")
    return ranks.astype(np.int64)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"cut-off k must be >= 1, got {k}")


def _per_user_hit(ranks: np.ndarray, k: int) -> np.ndarray:
    _check_k(k)
    return (ranks < k).astype(np.float64)


def _per_user_ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    _check_k(k)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def _per_user_mrr(ranks: np.ndarray, k: int | None) -> np.ndarray:
    rr = 1.0 / (ranks + 1.0)
    if k is None:
        return rr
    _check_k(k)
    return np.where(ranks < k, rr, 0.0)


def hit_rate(ranks: RanksLike, k: int) -> float:
    """Share of users whose target ranks in the top ``k`` (rank < k)."""
    return float(_per_user_hit(_ranks_numpy(ranks), k).mean())


def ndcg(ranks: RanksLike, k: int) -> float:
    """Mean NDCG@k with one relevant item: ``1 / log2(rank + 2)`` if rank < k, else 0."""
    return float(_per_user_ndcg(_ranks_numpy(ranks), k).mean())


def mrr(ranks: RanksLike, k: int | None = None) -> float:
    """Mean reciprocal rank ``1 / (rank + 1)``; with ``k``, users ranked at or beyond ``k`` count 0."""
    return float(_per_user_mrr(_ranks_numpy(ranks), k).mean())


def per_user_ranking_metrics(ranks: RanksLike, ks: Sequence[int] = (5, 10, 20)) -> dict[str, np.ndarray]:
    """Per-user values of ``hr@k``, ``ndcg@k``, ``mrr@k`` for every k, plus unbounded ``mrr``.

    Keep these for :func:`paired_bootstrap_ci` when two methods are compared on the same users.
    """
    r = _ranks_numpy(ranks)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"hr@{k}"] = _per_user_hit(r, k)
        out[f"ndcg@{k}"] = _per_user_ndcg(r, k)
        out[f"mrr@{k}"] = _per_user_mrr(r, k)
    out["mrr"] = _per_user_mrr(r, None)
    return out


def ranking_metrics(ranks: RanksLike, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """Means of :func:`per_user_ranking_metrics`: keys ``hr@5, ndcg@5, mrr@5, hr@10, ..., mrr``."""
    return {name: float(values.mean()) for name, values in per_user_ranking_metrics(ranks, ks).items()}


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of ``mean(a - b)`` over users, resampling users with replacement.

    Args:
        a, b: per-user values of one metric for two methods on the same users, in the same order.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling generator (the result is deterministic).
        level: two-sided confidence level.

    Returns:
        ``(mean_diff, low, high)``; the difference is significant at ``level`` when 0 lies outside
        ``[low, high]``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D paired arrays of one length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no users to bootstrap over")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // diff.size)  # bounds memory of the (chunk, n_users) index matrix
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, diff.size, size=(stop - start, diff.size))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(diff.mean()), float(low), float(high)


# ------------------------------------------------------------------------------------------- classification


def _check_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.ndim != 1 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (B, K) and labels (B,), got {probs.shape} and {labels.shape}")
    if probs.shape[0] == 0:
        raise ValueError("no examples given")
    if np.isnan(probs).any():
        raise ValueError("probs contain NaN")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got [{labels.min()}, {labels.max()}]")
    return probs, labels.astype(np.int64)


def per_user_correct(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-user 1.0/0.0 correctness of the argmax prediction (ties go to the lowest class index)."""
    probs, labels = _check_probs(probs, labels)
    return (probs.argmax(axis=1) == labels).astype(np.float64)


def per_user_log_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(U,) ``-log p(true class)`` of each user, probabilities clipped to [1e-15, 1]."""
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1.0))


def balanced_log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of the log loss of that class's users."""
    losses = per_user_log_loss(probs, labels)
    present = np.unique(labels)
    return float(np.mean([losses[labels == k].mean() for k in present]))


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of the argmax prediction, log loss, plus ROC-AUC when there are two classes.

    ``log_loss`` is the mean of ``-log p(true class)`` with probabilities clipped to [1e-15, 1] (a proper
    score: lower is better, and ``train.monitor: valid/log_loss`` stops early on it).
    ``balanced_log_loss`` is the same per class, averaged over the classes in the labels: every class weighs
    alike, as under ``task.class_weights: balanced`` (the loss such a model is trained on, and the score to
    stop it on; macro-F1 weighs classes alike too).

    Macro-F1 is sklearn's ``f1_score(average="macro", zero_division=0)``, averaged over the classes present
    in the labels or the predictions. ``auc`` is the ROC-AUC of the class-1 probability (only for K == 2;
    NaN when the labels hold a single class, where AUC is undefined).
    """
    probs, labels = _check_probs(probs, labels)
    preds = probs.argmax(axis=1)
    out = {
        "accuracy": float((preds == labels).mean()),
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "log_loss": float(per_user_log_loss(probs, labels).mean()),
        "balanced_log_loss": balanced_log_loss(probs, labels),
    }
    if probs.shape[1] == 2:
        both = np.unique(labels).size == 2
        out["auc"] = float(roc_auc_score(labels, probs[:, 1])) if both else float("nan")
    return out
