"""Cold-start baselines that need no target training: random scores and the content kNN.

- :class:`RandomScorer`: seeded uniform scores, a fresh draw per batch row (the floor every model must pass).
- :class:`ContentKNNScorer`: a user's profile is the mean of the content features of their source items;
  target items are ranked by cosine similarity of their features to it (the same features the content item
  encoder reads). A user whose source items have no content gets zero scores (ties, which count against).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from peterrec.tokens import NUM_SPECIAL_TOKENS


class RandomScorer:
    """Uniform random scores over ``num_items`` items, seeded: the same ranking on every call sequence."""

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items = num_items
        self.generator = torch.Generator().manual_seed(int(seed))

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, H) histories (only B is read) -> (B, num_items) float32."""
        return torch.rand(histories.shape[0], self.num_items, generator=self.generator)


def _l2_normalised(rows):
    """Rows scaled to unit L2 norm (zero rows stay zero), sparse or dense."""
    if sp.issparse(rows):
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.diags(scale.astype(np.float32)) @ rows
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


class ContentKNNScorer:
    """Cosine similarity of target items' features to the mean of the user's source items' features.

    ``source_rows`` has one row per source item id (special tokens first, as the encoder's table);
    ``target_rows`` one row per target column. Rows are L2-normalised before the mean, so every clicked item
    weighs alike; special ids and [PAD] are ignored.
    """

    def __init__(self, source_rows, target_rows) -> None:
        self.source = _l2_normalised(sp.csr_matrix(source_rows) if sp.issparse(source_rows) else source_rows)
        self.target = _l2_normalised(sp.csr_matrix(target_rows) if sp.issparse(target_rows) else target_rows)
        self.num_items = self.target.shape[0]

    def profiles(self, histories: np.ndarray):
        """(B, num_source_rows) weights: each user's real items, 1 / count each (a mean)."""
        rows, columns = np.nonzero(histories >= NUM_SPECIAL_TOKENS)
        items = histories[rows, columns]
        counts = np.bincount(rows, minlength=len(histories)).astype(np.float32)
        weights = 1.0 / counts[rows]
        return sp.csr_matrix((weights, (rows, items)), shape=(len(histories), self.source.shape[0]))

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, H) source item-id histories -> (B, num_target_items) float32 cosine similarities."""
        profile = _l2_normalised(self.profiles(histories.cpu().numpy()) @ self.source)
        similarity = profile @ self.target.T
        dense = similarity.toarray() if sp.issparse(similarity) else np.asarray(similarity)
        return torch.from_numpy(dense.astype(np.float32))


__all__ = ["ContentKNNScorer", "RandomScorer"]
