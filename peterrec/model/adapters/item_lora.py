"""A low-rank patch of the input item table: each item's vector gets a trainable low-rank offset.

A frozen backbone reads each item through its pretrained vector, learned to predict the next click. A
downstream label may hinge on *which* items a user clicked in a way those vectors do not keep (on
MovieLens-100K a bag-of-items logistic regression beats every frozen strategy on gender and age, and the
strategies that train the item table win most of the gap back; docs/results.md). The patch lets the task
move every item's vector inside an r-dimensional subspace at a cost of ``r · (items + C)`` parameters:

``vector(i) = E[i] + A[i] @ B``, ``A`` (items + 4, r) zero, ``B`` (r, C) normal with the table's own RMS,

so the patched model equals the pretrained one at initialisation (``A`` starts at zero, as LoRA does for
embedding tables), and a row ``A[i]`` of unit norm moves an item by about its own length whatever scale
pretraining left the table at (the scale LoRA's ``alpha / r`` would otherwise have to be tuned for). The
table itself stays frozen and is never copied; :func:`merge_item_lora` folds the offset into it for serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from peterrec.model.adapters.base import Adapter, AdapterModule, check_positive_int, register_wrapper


class ItemTableOffset(AdapterModule):
    """``A[ids] @ B``: the low-rank offset of every row of an item table; zero at init (``A`` is zero)."""

    def __init__(self, table: torch.Tensor, rank: int):
        super().__init__()
        rows, channels = table.shape
        rms = float(table.detach().float().pow(2).mean().sqrt()) or 1.0
        self.item_factors = nn.Parameter(table.new_zeros(rows, rank))
        self.channel_factors = nn.Parameter(torch.randn(rank, channels).to(table) * rms)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.item_factors) @ self.channel_factors

    def delta_weight(self) -> torch.Tensor:
        """The whole offset table (rows, C) that merging adds."""
        return self.item_factors @ self.channel_factors


class PatchedItemTable(nn.Module):
    """``embedding(ids) + offset(ids)``: the frozen table and its low-rank offset, computed apart."""

    def __init__(self, embedding: nn.Embedding, offset: ItemTableOffset):
        super().__init__()
        self.embedding = embedding
        self.offset = offset

    @property
    def weight(self) -> torch.Tensor:
        """The frozen table (what callers of an unpatched ``nn.Embedding`` read)."""
        return self.embedding.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids) + self.offset(ids).to(self.embedding.weight.dtype)


register_wrapper(PatchedItemTable, "embedding")


@dataclass
class ItemLoRAOptions:
    """``rank`` r of the offset."""

    rank: int = 4

    def __post_init__(self) -> None:
        check_positive_int("rank", self.rank)


class ItemLoRAAdapter(Adapter):
    """The low-rank item-table patch (``layers`` does not apply: it patches the input table)."""

    kind = "item_lora"
    Options = ItemLoRAOptions
    shape = "insert"

    def attach(self, backbone) -> list[str]:
        encoder = backbone.item_encoder
        table = getattr(encoder, "embedding", None)
        if not isinstance(table, nn.Embedding):
            raise ValueError(
                "item_lora patches an ID item table (model.item_encoder: id), and this one is "
                f"{'already patched' if isinstance(table, PatchedItemTable) else type(encoder).__name__}"
            )
        if table.sparse:
            raise ValueError("item_lora needs a dense item table (model.sparse_embedding: false)")
        offset = ItemTableOffset(table.weight, self.options.rank)
        encoder.embedding = PatchedItemTable(table, offset)
        return ["item_encoder.embedding.offset.item_factors", "item_encoder.embedding.offset.channel_factors"]


def merge_item_lora(backbone: nn.Module) -> bool:
    """Fold the item-table offset into the table and remove the wrapper; True if there was one."""
    wrapper = getattr(backbone.item_encoder, "embedding", None)
    if not isinstance(wrapper, PatchedItemTable):
        return False
    with torch.no_grad():
        wrapper.embedding.weight += wrapper.offset.delta_weight().to(wrapper.embedding.weight.dtype)
    backbone.item_encoder.embedding = wrapper.embedding
    backbone.adapters = [a for a in getattr(backbone, "adapters", []) if a.kind != ItemLoRAAdapter.kind]
    return True


__all__ = ["ItemLoRAAdapter", "ItemLoRAOptions", "ItemTableOffset", "PatchedItemTable", "merge_item_lora"]
