"""The pretraining model: a backbone and the next-item softmax layer of its item encoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from peterrec.model.backbone import NextItNet
from peterrec.model.item_encoder import build_item_encoder
from peterrec.tokens import MASK

if TYPE_CHECKING:
    from peterrec.config import ModelConfig


class NextItemModel(nn.Module):
    """A backbone with its item softmax layer: hidden states, losses and next-item scores."""

    def __init__(self, backbone: NextItNet, output: nn.Module, max_len: int):
        super().__init__()
        self.backbone = backbone
        self.output = output
        self.max_len = max_len

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.backbone(seqs)

    def model_input(self, histories: torch.Tensor) -> torch.Tensor:
        """The last ``max_len`` positions to read a next-item prediction from.

        Causal: the history itself, read at its last position. Non-causal: the history plus a
        trailing [MASK], read at the [MASK].
        """
        if self.backbone.causal:
            return histories[:, -self.max_len :]
        tail = histories[:, -(self.max_len - 1) :] if self.max_len > 1 else histories[:, :0]
        mask = torch.full((len(histories), 1), MASK, dtype=histories.dtype, device=histories.device)
        return torch.cat([tail, mask], dim=1)

    def next_item_scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, H) item ids -> (B, num_items) scores; column j is item id j + 4."""
        hidden = self.backbone(self.model_input(histories))[:, -1]
        return self.output(hidden)


def build_next_item_model(model: ModelConfig, num_items: int, max_len: int, features=None) -> NextItemModel:
    """A freshly initialised backbone of the configured shape and item encoder, with its softmax layer.

    ``features``: the vocabulary's content feature rows (a content item encoder needs them)."""
    content = {"features": features, "hidden": model.text.hidden}
    encoder = build_item_encoder(
        model.item_encoder, num_items, model.channels, sparse=model.sparse_embedding, **content
    )
    backbone = NextItNet(
        num_items, model.channels, model.dilations, model.kernel_size, model.causal, item_encoder=encoder
    )
    backbone.check_length(max_len)
    return NextItemModel(backbone, encoder.make_output(), max_len)


__all__ = ["NextItemModel", "build_next_item_model"]
