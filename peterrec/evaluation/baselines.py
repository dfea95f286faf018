"""Simple non-neural baselines that every transfer model is reported beside.

Ranking scorers return (B, num_items) float32 score matrices whose column ``j`` is item id ``j + 4``, ready
for :func:`peterrec.metrics.target_ranks`. Histories are LongTensors (B, H) of item ids, left-padded with 0;
pads and special ids (< 4) are ignored. Profile baselines return class probabilities for
:func:`peterrec.metrics.classification_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler, normalize

from peterrec.tokens import NUM_SPECIAL_TOKENS

__all__ = [
    "PopularityScorer",
    "MarkovScorer",
    "CooccurrenceKNNScorer",
    "majority_class",
    "bag_of_items_logistic",
]


def _real_columns(sequence: np.ndarray | Sequence[int], num_items: int, what: str) -> np.ndarray:
    """Columns (item id - 4) of the real items of one sequence, in order; pads and special ids dropped."""
    ids = np.asarray(sequence, dtype=np.int64).ravel()
    if ids.size and ids.max() >= num_items + NUM_SPECIAL_TOKENS:
        raise ValueError(
            f"{what} holds item id {ids.max()} but num_items is {num_items} (ids 4..{num_items + 3})"
        )
    return ids[ids >= NUM_SPECIAL_TOKENS] - NUM_SPECIAL_TOKENS


def _presence_matrix(sequences: Sequence[np.ndarray], num_items: int, what: str) -> sp.csr_matrix:
    """Binary (users, num_items) CSR matrix: 1 where the user clicked the item at least once."""
    rows, cols = [], []
    for u, seq in enumerate(sequences):
        c = np.unique(_real_columns(seq, num_items, what))
        rows.append(np.full(c.size, u, dtype=np.int64))
        cols.append(c)
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    data = np.ones(row.size, dtype=np.float64)
    return sp.csr_matrix((data, (row, col)), shape=(len(sequences), num_items))


def _histories_numpy(histories: torch.Tensor | np.ndarray, num_items: int) -> np.ndarray:
    h = histories.detach().cpu().numpy() if isinstance(histories, torch.Tensor) else np.asarray(histories)
    if h.ndim != 2:
        raise ValueError(f"histories must be (B, H), got shape {h.shape}")
    h = h.astype(np.int64)
    if h.size and h.max() >= num_items + NUM_SPECIAL_TOKENS:
        raise ValueError(f"histories hold item id {h.max()} but num_items is {num_items}")
    return h


def _click_counts(sequences: Sequence[np.ndarray], num_items: int, what: str) -> np.ndarray:
    """Number of clicks on each item column over all sequences (repeat clicks count)."""
    counts = np.zeros(num_items, dtype=np.float64)
    for seq in sequences:
        counts += np.bincount(_real_columns(seq, num_items, what), minlength=num_items)
    return counts


def _tie_break(popularity: np.ndarray) -> np.ndarray:
    """Popularity scaled into [0, 0.5]: orders equal integer scores, never overrides a difference of 1."""
    top = popularity.max() if popularity.size else 0.0
    return 0.5 * popularity / top if top > 0 else np.zeros_like(popularity)


class PopularityScorer:
    """Scores every item by its number of clicks in the training sequences, the same for every user."""

    def __init__(self, train_sequences: Sequence[np.ndarray], num_items: int) -> None:
        self.num_items = num_items
        self.popularity = _click_counts(train_sequences, num_items, "train_sequences")

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, H) histories -> (B, num_items) float32 popularity counts.

        Only the batch size is read, so the histories may come from another vocabulary (e.g. source-domain
        histories when ranking target items in cold start).
        """
        if histories.dim() != 2:
            raise ValueError(f"histories must be (B, H), got shape {tuple(histories.shape)}")
        row = torch.from_numpy(self.popularity.astype(np.float32))
        return row.unsqueeze(0).repeat(histories.shape[0], 1)


class MarkovScorer:
    """First-order item transitions, with popularity as a tie-break.

    ``transitions[i, j]`` counts how often item column ``j`` directly follows item column ``i`` in a training
    sequence (pads and special ids removed first). A user's scores are the transition counts from their last
    real item plus ``0.5 * popularity / max_popularity``; counts are integers, so the tie-break (at most 0.5)
    orders items with equal counts and never outranks a transition. A user with no real item in the history
    gets the tie-break alone, i.e. the popularity ranking.
    """

    def __init__(self, train_sequences: Sequence[np.ndarray], num_items: int) -> None:
        self.num_items = num_items
        prev, nxt = [], []
        for seq in train_sequences:
            c = _real_columns(seq, num_items, "train_sequences")
            prev.append(c[:-1])
            nxt.append(c[1:])
        src = np.concatenate(prev) if prev else np.zeros(0, dtype=np.int64)
        dst = np.concatenate(nxt) if nxt else np.zeros(0, dtype=np.int64)
        # Duplicate (i, j) pairs are summed on conversion to CSR.
        self.transitions = sp.csr_matrix(
            (np.ones(src.size, dtype=np.float64), (src, dst)), shape=(num_items, num_items)
        )
        self.popularity = _click_counts(train_sequences, num_items, "train_sequences")
        self._tie = _tie_break(self.popularity)

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, H) item-id histories -> (B, num_items) float32 scores from each user's last real item."""
        h = _histories_numpy(histories, self.num_items)
        real = h >= NUM_SPECIAL_TOKENS
        has_item = real.any(axis=1)
        # Last real position per row: argmax over the reversed mask finds the first one from the end.
        last_pos = h.shape[1] - 1 - real[:, ::-1].argmax(axis=1) if h.shape[1] else np.zeros(len(h), int)
        out = np.tile(self._tie, (h.shape[0], 1))
        users = np.flatnonzero(has_item)
        if users.size:
            last = h[users, last_pos[users]] - NUM_SPECIAL_TOKENS
            out[users] += self.transitions[last].toarray()
        return torch.from_numpy(out.astype(np.float32))


def _dense_rank(primary: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Per row, the dense rank of each column ordered by ``primary`` then ``tie`` (both ascending).

    Columns equal in both keys share a rank (they stay tied); rank values are small integers, so float32
    represents them exactly, unlike ``primary + tiny * tie``.
    """
    b, n = primary.shape
    tie = np.broadcast_to(tie, (b, n))
    order = np.lexsort((tie, primary), axis=-1)
    p_sorted = np.take_along_axis(primary, order, axis=1)
    t_sorted = np.take_along_axis(tie, order, axis=1)
    new_group = np.ones((b, n), dtype=np.int64)
    new_group[:, 1:] = (p_sorted[:, 1:] != p_sorted[:, :-1]) | (t_sorted[:, 1:] != t_sorted[:, :-1])
    ranks = np.empty((b, n), dtype=np.int64)
    np.put_along_axis(ranks, order, np.cumsum(new_group, axis=1) - 1, axis=1)
    return ranks


class CooccurrenceKNNScorer:
    """Source-to-target item co-occurrence kNN for cross-domain cold start.

    Over training users, ``cooc[s, t]`` is the number of users who clicked both source item ``s`` and target
    item ``t`` (each user counts once per pair, however often they clicked). A test user's score for target
    item ``t`` is ``sum over the user's distinct source items s of weight(s, t)``, where

    - ``normalization="cosine"`` (default): ``weight = cooc[s, t] / sqrt(users(s) * users(t))``;
    - ``normalization="count"``: ``weight = cooc[s, t]``, plain counts.

    Cosine is the default because it ranked better on the ML-100K cold-start task (docs/results.md): mean
    HR@10 0.47 vs 0.39 for plain counts (popularity 0.33) over ten random 80/20 user splits. Plain counts are
    dominated by the most popular target items; dividing by ``sqrt(users(s))`` also stops heavy-tail source
    items from swamping the sum.

    Target popularity (training users who clicked the item) breaks ties and never outranks a score
    difference. With counts, scores are the integer sums plus ``0.5 * pop / max_pop``; with cosine, whose sums
    are real numbers, scores are each row's dense rank under (similarity, popularity), which keeps the order
    exact in float32 and leaves only items equal in both tied. Users with no source items get the popularity
    ranking.
    """

    def __init__(
        self,
        source_sequences: Sequence[np.ndarray],
        target_sequences: Sequence[np.ndarray],
        num_source_items: int,
        num_target_items: int,
        normalization: str = "cosine",
    ) -> None:
        if len(source_sequences) != len(target_sequences):
            raise ValueError(
                f"source_sequences ({len(source_sequences)}) and target_sequences ({len(target_sequences)}) "
                "must hold one sequence per training user, in the same order"
            )
        if normalization not in ("count", "cosine"):
            raise ValueError(f"normalization must be 'cosine' or 'count', got {normalization!r}")
        self.num_source_items = num_source_items
        self.num_target_items = num_target_items
        self.normalization = normalization
        xs = _presence_matrix(source_sequences, num_source_items, "source_sequences")
        xt = _presence_matrix(target_sequences, num_target_items, "target_sequences")
        cooc = (xs.T @ xt).tocsr()
        self.target_popularity = np.asarray(xt.sum(axis=0)).ravel()
        if normalization == "cosine":
            source_users = np.asarray(xs.sum(axis=0)).ravel()
            inv_s = sp.diags(1.0 / np.sqrt(np.maximum(source_users, 1.0)))
            inv_t = sp.diags(1.0 / np.sqrt(np.maximum(self.target_popularity, 1.0)))
            cooc = (inv_s @ cooc @ inv_t).tocsr()
        self.cooccurrence = cooc

    def similarity(self, source_histories: torch.Tensor) -> np.ndarray:
        """(B, H) source item-id histories -> (B, num_target_items) float64 kNN sums, without tie-break."""
        h = _histories_numpy(source_histories, self.num_source_items)
        xs = _presence_matrix(list(h), self.num_source_items, "source_histories")
        return (xs @ self.cooccurrence).toarray()

    def scores(self, source_histories: torch.Tensor) -> torch.Tensor:
        """(B, H) source item-id histories -> (B, num_target_items) float32 target scores (see class doc)."""
        sim = self.similarity(source_histories)
        if self.normalization == "cosine":
            out = _dense_rank(sim, self.target_popularity)
        else:
            out = sim + _tie_break(self.target_popularity)
        return torch.from_numpy(out.astype(np.float32))


def majority_class(labels_train: np.ndarray, n_test: int, num_classes: int | None = None) -> np.ndarray:
    """Class prior of the training labels, repeated for ``n_test`` users: (n_test, K) probabilities.

    The argmax is the majority class (ties go to the lowest label), so its accuracy is the majority-class
    accuracy and its AUC is 0.5. ``K`` is ``num_classes`` or ``max(labels_train) + 1``.
    """
    labels = np.asarray(labels_train, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("labels_train is empty: no majority class")
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels_train must lie in [0, {k}), got [{labels.min()}, {labels.max()}]")
    prior = np.bincount(labels, minlength=k) / labels.size
    return np.tile(prior, (n_test, 1))


def _bag_of_items(sequences: Sequence[np.ndarray], num_items: int, what: str) -> sp.csr_matrix:
    """Set-of-clicked-items features, each row L2-normalised (k distinct items get 1/sqrt(k) each).

    L2 rather than L1: with L1 rows and C=2 the features are so small that the model collapses to the majority
    class on ML-100K, while L2 rows give the figures in docs/results.md.
    """
    return normalize(_presence_matrix(sequences, num_items, what), norm="l2")


def bag_of_items_logistic(
    train_sequences: Sequence[np.ndarray],
    train_labels: np.ndarray,
    test_sequences: Sequence[np.ndarray],
    num_items: int,
    C: float = 2.0,
    num_classes: int | None = None,
    class_weight: str | None = None,
) -> np.ndarray:
    """Logistic regression on the set of items each user clicked (L2 row-normalised): docs/protocols.md.

    Returns (n_test, K) class probabilities, ``K = num_classes or max(train_labels) + 1``; a class absent from
    the training labels gets probability 0. ``class_weight="balanced"`` weighs each class's loss by
    n / (K · n_class), as ``task.class_weights: balanced`` does for the neural models.
    """
    labels = np.asarray(train_labels, dtype=np.int64)
    if len(train_sequences) != labels.size:
        raise ValueError(f"{len(train_sequences)} train_sequences but {labels.size} train_labels")
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    x_train = _bag_of_items(train_sequences, num_items, "train_sequences")
    x_test = _bag_of_items(test_sequences, num_items, "test_sequences")
    return _logistic_probs(x_train, labels, x_test, k, C, class_weight)


def _logistic_probs(
    x_train, labels: np.ndarray, x_test, num_classes: int, C: float, class_weight: str | None = None
) -> np.ndarray:
    """(n_test, K) probabilities of a logistic regression; a class absent from training gets 0."""
    probs = np.zeros((x_test.shape[0], num_classes), dtype=np.float64)
    classes = np.unique(labels)
    if classes.size == 1:  # sklearn refuses a single class; the answer is certain anyway
        probs[:, classes[0]] = 1.0
        return probs
    model = LogisticRegression(C=C, max_iter=1000, class_weight=class_weight)
    model.fit(x_train, labels)
    probs[:, model.classes_] = model.predict_proba(x_test)
    return probs


def vector_logistic(
    train_vectors: np.ndarray,
    train_labels: np.ndarray,
    test_vectors: np.ndarray,
    num_classes: int,
    C: float = 1.0,
    class_weight: str | None = None,
) -> np.ndarray:
    """Logistic regression on dense user vectors, standardised with the training users' mean and std
    (``class_weight`` as in :func:`bag_of_items_logistic`).

    The transfer baselines of a profile table: a linear probe on frozen backbone user vectors (no gradient
    into the backbone), and the mean of the pretrained item embeddings over a user's whole history.
    """
    scaler = StandardScaler().fit(train_vectors)
    labels = np.asarray(train_labels, dtype=np.int64)
    return _logistic_probs(
        scaler.transform(train_vectors), labels, scaler.transform(test_vectors), num_classes, C, class_weight
    )
