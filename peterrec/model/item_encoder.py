"""Item encoders: the vectors a NextItNet reads for its input items and scores as next-item candidates.

An :class:`ItemEncoder` is the one place that knows what an item *is* to the model. It owns

- the input vectors of item ids (B, L) -> (B, L, C), with the special-token rows: [PAD] positions are
  masked (:meth:`ItemEncoder.padding_mask`) and [CLS] can be replaced by a trainable vector that the
  caller owns (``cls_vector``; a finetuned model keeps its own, so a shared backbone is never changed);
- the output side: :meth:`ItemEncoder.make_output` builds the next-item softmax layer over this
  encoder's items, and :meth:`ItemEncoder.make_target_head` the cold-start head over a new, disjoint
  target vocabulary; every new scoring layer starts with a zero output bias, so an item with no trained
  bias row is scored by its vector alone;
- what happens to items outside the frozen vocabulary (:meth:`ItemEncoder.encode`: [UNK] for ID tables,
  which have no vector for an unseen item).

:class:`IdItemEncoder` (ID embedding tables, the original NextItNet) is the first implementation. Other
encoders register under a name with :func:`register_item_encoder` and are chosen with
``model.item_encoder`` in a pretraining config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from peterrec.model.exact_softmax import softmax_cross_entropy
from peterrec.model.init import trunc_normal_
from peterrec.tokens import CLS, NUM_SPECIAL_TOKENS, PAD


def positive_size(num_items: int) -> int:
    if num_items < 1:
        raise ValueError(f"num_items must be positive, got {num_items}")
    return num_items


class ItemScorer(Protocol):
    """A layer that scores items from hidden states: column j is item id j + 4."""

    num_items: int

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor: ...  # (..., C) -> (..., num_items)

    def logits_for(self, hidden: torch.Tensor, columns: torch.Tensor) -> torch.Tensor: ...


def score_columns(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, columns: torch.Tensor
) -> torch.Tensor:
    """``hidden`` (N, C) against the gathered rows ``weight`` of ``columns``: (S, C) for shared columns (S,),
    (N, S, C) for per-row columns (N, S); returns (N, S) logits with ``bias`` (the columns' biases) added."""
    if columns.dim() == 1:
        return F.linear(hidden, weight, bias)
    if columns.dim() == 2:
        return torch.einsum("nc,nsc->ns", hidden, weight) + bias
    raise ValueError(f"columns must be 1-D or 2-D, got shape {tuple(columns.shape)}")


class ItemOutput(nn.Module):
    """Softmax layer over items: ``logits = hidden @ weight.T + bias``, column j is item id j + 4.

    The weight is separate from the input embedding (untied), as in the original NextItNet code. The bias
    starts at zero.
    """

    def __init__(self, num_items: int, channels: int, sparse: bool = False):
        super().__init__()
        self.num_items, self.channels = positive_size(num_items), channels
        # sparse: ``logits_for`` gives the weight a sparse gradient over the gathered rows only
        # (sampled softmax with SparseAdam); the bias stays dense, it is one scalar per item.
        self.sparse = sparse
        self.weight = nn.Parameter(trunc_normal_(torch.empty(num_items, channels)))
        self.bias = nn.Parameter(torch.zeros(num_items))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over all items: (..., C) -> (..., num_items)."""
        return F.linear(hidden, self.weight, self.bias)

    def cross_entropy(
        self, hidden: torch.Tensor, columns: torch.Tensor, chunk_items: int | None = None
    ) -> torch.Tensor:
        """Exact full-softmax cross entropy (mean over rows) of hidden (N, C) against target columns (N,),
        without the (N, num_items) logits tensor (:mod:`peterrec.model.exact_softmax`)."""
        return softmax_cross_entropy(hidden, self.weight, self.bias, columns, chunk_items)

    def logits_for(self, hidden: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Logits of the requested columns only.

        ``hidden`` is (N, C); ``columns`` is (S,) (the same columns for every row, e.g. shared
        negatives) or (N, S) (per-row columns). Returns (N, S). Only the S (or N·S) weight rows
        needed are gathered; the full (N, num_items) product is never formed.
        """
        weight = F.embedding(columns, self.weight, sparse=self.sparse)
        return score_columns(hidden, weight, self.bias[columns], columns)

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, channels={self.channels}"


class TargetItemHead(ItemOutput):
    """The ID cold-start head: a new table for the target domain's items, scored by dot product.

    ``scores = user @ weight.T + bias``; column j is target item id j + 4. The table is separate from the
    backbone's (source-domain) item vectors, so source and target vocabularies may be disjoint.
    """

    def __init__(self, channels: int, num_target_items: int):
        if num_target_items < 1:
            raise ValueError(f"num_target_items must be positive, got {num_target_items}")
        super().__init__(num_target_items, channels)


class ItemEncoder(nn.Module):
    """The interface every item encoder implements (see the module docstring).

    Subclasses set ``num_items`` (real items; ids 0-3 are special tokens) and ``channels`` and implement
    :meth:`item_vectors`, :meth:`make_output`, :meth:`make_target_head` and :meth:`fresh`.
    """

    num_items: int
    channels: int
    uses_content = False  # True: items are represented by content features (peterrec.model.content_encoder)

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """(B, L) ids -> (B, L, C) vectors, special tokens included (their rows are masked later)."""
        raise NotImplementedError

    def make_output(self) -> nn.Module:  # pragma: no cover - interface
        """A new next-item softmax layer over this encoder's items (an :class:`ItemScorer`)."""
        raise NotImplementedError

    def make_target_head(self, num_target_items: int, features=None) -> nn.Module:  # pragma: no cover
        """A new cold-start head scoring ``num_target_items`` items the backbone never saw (``features``:
        their content, for encoders that read content)."""
        raise NotImplementedError

    def fresh(self) -> ItemEncoder:  # pragma: no cover - interface
        """A newly initialised encoder of the same kind and shape (draws from the global RNG)."""
        raise NotImplementedError

    def forward(self, ids: torch.Tensor, cls_vector: torch.Tensor | None = None) -> torch.Tensor:
        """Input vectors (B, L, C); [CLS] positions read ``cls_vector`` (C,) instead when it is given."""
        vectors = self.item_vectors(ids)
        if cls_vector is None:
            return vectors
        is_cls = (ids == CLS).unsqueeze(-1)
        return torch.where(is_cls, cls_vector.to(vectors.dtype), vectors)

    def cls_row(self) -> torch.Tensor:
        """The pretrained [CLS] vector (C,), detached: the start value of a trainable [CLS]."""
        ids = torch.full((1, 1), CLS, dtype=torch.long, device=self.device)
        return self.item_vectors(ids)[0, 0].detach().clone()

    @staticmethod
    def padding_mask(ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """(B, L, 1) with 1 at real items and 0 at [PAD], or None when no position is [PAD].

        Full batches (every window of a long user, the benchmarks) then skip the mask multiplications and
        their backward entirely; the outputs are the same either way. The check costs one host sync on a
        GPU.
        """
        real = ids != PAD
        if bool(real.all()):
            return None
        return real.unsqueeze(-1).to(dtype)

    @staticmethod
    def encode(vocab, items: Sequence[str]) -> np.ndarray:
        """Item id strings -> ids of the frozen vocabulary; an item it does not know becomes [UNK]."""
        return vocab.encode(items)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class IdItemEncoder(ItemEncoder):
    """One learned vector per item id (trunc-normal, std 0.02), as NextItNet and PeterRec use.

    The table has ``num_items + 4`` rows (special tokens first). ``sparse``: gradients touch only the
    looked-up rows, for SparseAdam on huge vocabularies. The output side is a separate (untied) table
    with a bias, as in the original code.
    """

    def __init__(self, num_items: int, channels: int, sparse: bool = False):
        super().__init__()
        self.num_items, self.channels, self.sparse = positive_size(num_items), channels, sparse
        self.embedding = nn.Embedding(num_items + NUM_SPECIAL_TOKENS, channels, sparse=sparse)
        trunc_normal_(self.embedding.weight)

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def make_output(self) -> ItemOutput:
        return ItemOutput(self.num_items, self.channels, sparse=self.sparse)

    def make_target_head(self, num_target_items: int, features=None) -> TargetItemHead:
        return TargetItemHead(self.channels, num_target_items)

    def fresh(self) -> IdItemEncoder:
        return IdItemEncoder(self.num_items, self.channels)

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, channels={self.channels}, sparse={self.sparse}"


EncoderFactory = Callable[..., ItemEncoder]
ITEM_ENCODERS: dict[str, EncoderFactory] = {"id": IdItemEncoder}
CONTENT_ITEM_ENCODERS: set[str] = set()  # names whose factory takes the items' content features


def register_item_encoder(name: str, factory: EncoderFactory | None = None, *, uses_content: bool = False):
    """Register ``factory(num_items, channels, sparse=...)`` under ``name`` (usable as a decorator).

    The name is then a valid ``model.item_encoder`` in pretraining configs. ``uses_content``: the factory
    also takes ``features=`` (a :class:`~peterrec.model.content_encoder.FeatureTable` of every item) and
    ``hidden=``, built from the config's ``model.text`` section.
    """

    def register(f: EncoderFactory) -> EncoderFactory:
        ITEM_ENCODERS[name] = f
        if uses_content:
            CONTENT_ITEM_ENCODERS.add(name)
        return f

    return register(factory) if factory is not None else register


def build_item_encoder(
    name: str, num_items: int, channels: int, sparse: bool = False, **content: object
) -> ItemEncoder:
    """The registered encoder ``name`` for ``num_items`` real items (``content``: features, hidden)."""
    if name not in ITEM_ENCODERS:
        raise ValueError(f"unknown item encoder {name!r}; registered: {', '.join(ITEM_ENCODERS)}")
    if name not in CONTENT_ITEM_ENCODERS:
        return ITEM_ENCODERS[name](num_items, channels, sparse=sparse)
    return ITEM_ENCODERS[name](num_items, channels, sparse=sparse, **content)


__all__ = [
    "CONTENT_ITEM_ENCODERS",
    "ITEM_ENCODERS",
    "IdItemEncoder",
    "ItemEncoder",
    "ItemOutput",
    "ItemScorer",
    "TargetItemHead",
    "build_item_encoder",
    "register_item_encoder",
]
