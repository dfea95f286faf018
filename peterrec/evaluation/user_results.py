"""Per-user test outputs of runs: pooled over cross-validation folds, scored, and compared with a paired
bootstrap over users.

A finetuned run keeps, per test user, what its metrics are made of (``test_per_user.json``): per-user values
of the ranking metrics (HR, NDCG, MRR), or for a classifier the label and the class probabilities. Metrics
that are means over users (accuracy, NDCG@10, ...) and metrics that are not (ROC-AUC, macro-F1) are then
computed the same way from :class:`UserOutputs`, with a weight per user: all ones for the metric itself, or
the counts of one bootstrap resample (a user drawn twice weighs 2). That makes the paired bootstrap exact for
AUC and macro-F1 too, and vectorised over resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from peterrec.evaluation.metrics import per_user_log_loss

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "auc", "log_loss")


@dataclass
class UserOutputs:
    """One method's per-user test outputs, users in a fixed order.

    ``values``: per-user metric values (e.g. ``ndcg@10``, ``accuracy``); ``labels`` (U,) and
    ``probabilities`` (U, K): a classifier's true classes and predictions (None for ranking tasks).
    """

    users: list[str] | None
    values: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None

    @classmethod
    def from_json(cls, data: dict, users: list[str] | None = None) -> UserOutputs:
        """Read one entry of ``test_per_user.json`` (a baseline's entry takes the run's ``users``)."""
        special = {"users", "labels", "probabilities", "baselines"}
        values = {k: np.asarray(v, dtype=np.float64) for k, v in data.items() if k not in special}
        labels = np.asarray(data["labels"], dtype=np.int64) if "labels" in data else None
        probs = np.asarray(data["probabilities"], dtype=np.float64) if "probabilities" in data else None
        return cls(data.get("users", users), values, labels, probs)

    def __len__(self) -> int:
        if self.labels is not None:
            return len(self.labels)
        return len(next(iter(self.values.values()))) if self.values else 0

    def take(self, index: np.ndarray) -> UserOutputs:
        """The outputs of the users at ``index``, in that order."""
        users = None if self.users is None else [self.users[i] for i in index]
        values = {k: v[index] for k, v in self.values.items()}
        labels = None if self.labels is None else self.labels[index]
        probs = None if self.probabilities is None else self.probabilities[index]
        return UserOutputs(users, values, labels, probs)

    def metric_names(self) -> list[str]:
        """Every metric these outputs can give: the per-user values', and a classifier's."""
        names = list(self.values)
        if self.probabilities is not None:
            binary = self.probabilities.shape[1] == 2
            names += [m for m in CLASSIFICATION_METRICS if m not in names and (m != "auc" or binary)]
        return names

    def metric(self, name: str, weights: np.ndarray | None = None) -> np.ndarray:
        """``name`` under per-user ``weights`` (R, U): one value per row of weights; ``None`` = one row of
        ones (the metric itself, shape (1,))."""
        weights = np.ones((1, len(self))) if weights is None else np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2 or weights.shape[1] != len(self):
            raise ValueError(f"weights must be (R, {len(self)}), got {weights.shape}")
        if self.probabilities is not None and name in ("macro_f1", "auc", "log_loss"):
            return _classification_metric(name, self.probabilities, self.labels, weights)
        if name not in self.values:
            raise KeyError(f"no per-user values of {name!r}; these outputs hold {self.metric_names()}")
        return weights @ self.values[name] / weights.sum(axis=1)

    def summary(self) -> dict[str, float]:
        """Every metric of :meth:`metric_names`, on all users."""
        return {name: float(self.metric(name)[0]) for name in self.metric_names()}


def pool_folds(folds: Sequence[UserOutputs]) -> UserOutputs:
    """The outputs of cross-validation folds as one set of users, ordered by user id.

    Every user must be tested in exactly one fold; ordering by user id pairs the rows of any two methods
    run on the same folds.
    """
    if not folds:
        raise ValueError("no folds to pool")
    if any(f.users is None for f in folds):
        raise ValueError("pooling folds needs the users of each fold")
    users = [u for f in folds for u in f.users]
    if len(set(users)) != len(users):
        raise ValueError("a user is tested in more than one fold: these runs are not folds of one split")
    values = {k: np.concatenate([f.values[k] for f in folds]) for k in folds[0].values}
    labels = None if folds[0].labels is None else np.concatenate([f.labels for f in folds])
    probs = None if folds[0].probabilities is None else np.concatenate([f.probabilities for f in folds])
    pooled = UserOutputs(users, values, labels, probs)
    return pooled.take(np.argsort(np.asarray(users), kind="stable"))


def paired_bootstrap_metric_ci(
    a: Sequence[UserOutputs],
    b: Sequence[UserOutputs],
    metric: str,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of ``mean_s metric(a_s) - mean_s metric(b_s)`` over users.

    ``a`` and ``b`` hold one method's outputs per seed (one entry for a deterministic baseline), all on the
    same users in the same order. Each resample draws users with replacement, once for both methods (the
    pairing), and recomputes the metric itself, so AUC and macro-F1 are bootstrapped as what they are, not
    as a mean of per-user values. Returns ``(difference on all users, low, high)``.
    """
    if not a or not b:
        raise ValueError("need the outputs of both methods")
    users = a[0].users
    for outputs in [*a, *b]:
        if len(outputs) != len(a[0]) or (users is not None and outputs.users not in (None, users)):
            raise ValueError("the outputs to compare must hold the same users in the same order")
    if len(a[0]) == 0:
        raise ValueError("no users to bootstrap over")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")

    def difference(weights: np.ndarray | None) -> np.ndarray:
        mean_a = np.mean([o.metric(metric, weights) for o in a], axis=0)
        return mean_a - np.mean([o.metric(metric, weights) for o in b], axis=0)

    n = len(a[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    diffs = np.concatenate(
        [
            difference(rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, n_resamples - start)))
            for start in range(0, n_resamples, chunk)
        ]
    )
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(diffs, [alpha, 1.0 - alpha])
    return float(difference(None)[0]), float(low), float(high)


# ------------------------------------------------------------------------------- weighted metrics


def _classification_metric(name: str, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray):
    if name == "auc":
        if probs.shape[1] != 2:
            raise KeyError("auc is defined for two classes only")
        return weighted_auc(probs[:, 1], labels, weights)
    if name == "macro_f1":
        return weighted_macro_f1(probs.argmax(axis=1), labels, probs.shape[1], weights)
    return weights @ per_user_log_loss(probs, labels) / weights.sum(axis=1)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of ``scores`` for ``labels == 1`` with per-user weights (R, U): one AUC per row.

    Ties count one half, as in ``sklearn.metrics.roc_auc_score``; a row without both classes gives NaN.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    pos = np.add.reduceat(w * positive, starts, axis=1)  # weight of each tie group's positives
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (pos * (neg_below + 0.5 * neg)).sum(axis=1) / pairs, np.nan)


def weighted_macro_f1(
    predictions: np.ndarray, labels: np.ndarray, num_classes: int, weights: np.ndarray
) -> np.ndarray:
    """Macro-F1 under per-user weights (R, U), averaged over the classes that occur (with weight) in the
    labels or the predictions, as ``sklearn.metrics.f1_score(average="macro", zero_division=0)``."""
    true = np.eye(num_classes)[labels]
    predicted = np.eye(num_classes)[predictions]
    tp = weights @ (true * predicted)
    true_w, predicted_w = weights @ true, weights @ predicted
    present = (true_w > 0) | (predicted_w > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / (true_w + predicted_w), 0.0)
    return f1.sum(axis=1) / present.sum(axis=1)


__all__ = [
    "CLASSIFICATION_METRICS",
    "UserOutputs",
    "paired_bootstrap_metric_ci",
    "pool_folds",
    "weighted_auc",
    "weighted_macro_f1",
]
