"""Task heads: what a finetuned model puts on top of the user representation (B, C).

- :class:`ClassifierHead` — user profile prediction (gender, age bucket, ...): logits over K classes.
- :class:`TargetItemHead` — cross-domain cold start: a new target-item table scored by dot product (made by
  the item encoder, :meth:`peterrec.model.item_encoder.ItemEncoder.make_target_head`).
- :class:`NextItemHead` — same-domain next-item finetuning: reuses the pretrained item softmax layer.

Item columns follow the backbone's convention: column j is item id j + 4 (ids 0-3 are special tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peterrec.model.init import trunc_normal_
from peterrec.model.item_encoder import TargetItemHead


class ClassifierHead(nn.Linear):
    """``Linear(channels, num_classes)``: user representation (B, C) -> class logits (B, K).

    The weight starts trunc-normal (std 0.02) and the bias at zero, like every new layer in this project.
    ``dropout`` drops entries of the user vector while training (it has no tensors, so a saved head loads
    into a head of any dropout).
    """

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(channels, num_classes)
        self.dropout = dropout

    def forward(self, user: torch.Tensor) -> torch.Tensor:
        if self.dropout and self.training:
            user = F.dropout(user, self.dropout, training=True)
        return super().forward(user)

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight)
        nn.init.zeros_(self.bias)


class NextItemHead(nn.Module):
    """Wraps an existing item output layer (e.g. the pretrained ``ItemOutput``) for next-item finetuning.

    ``output`` is any module mapping (B, C) -> (B, num_items); its tensors become the head's
    (``head.output.*``).
    """

    def __init__(self, output: nn.Module):
        super().__init__()
        self.output = output

    def forward(self, user: torch.Tensor) -> torch.Tensor:
        """Scores of every item: (B, C) -> (B, num_items)."""
        return self.output(user)

    def logits_for(self, user: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Scores of the requested columns; needs ``logits_for`` on the wrapped layer (``ItemOutput``)."""
        if not hasattr(self.output, "logits_for"):
            name = type(self.output).__name__
            raise TypeError(f"{name} has no logits_for(); score all items with forward()")
        return self.output.logits_for(user, columns)


__all__ = ["ClassifierHead", "NextItemHead", "TargetItemHead"]
