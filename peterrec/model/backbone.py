"""NextItNet: stacked dilated residual convolutions over item-id sequences (Yuan et al., WSDM 2019).

Sequences are left-padded with [PAD] (id 0) so the last position holds the newest item. There is no
positional embedding. Every tensor that enters a convolution is zero at pad positions, so the outputs
of a sequence do not depend on how much padding its batch has.

The file reads bottom-up, as the architecture does: a dilated convolution (its own module,
:mod:`peterrec.model.dilated_conv`) -> :class:`ResidualBlock` -> :class:`NextItNet`. Item vectors come from
an :class:`~peterrec.model.item_encoder.ItemEncoder` (ID tables by default). All layers work
channels-last, (batch, length, channels).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from peterrec.model.dilated_conv import DilatedConv1d
from peterrec.model.item_encoder import IdItemEncoder, ItemEncoder

logger = logging.getLogger(__name__)

DEFAULT_DILATIONS = (1, 4) * 4


def receptive_field(dilations: Sequence[int], kernel_size: int) -> int:
    """Positions seen by one output of a stack whose blocks use dilations d and 2d."""
    return 1 + (kernel_size - 1) * sum(3 * d for d in dilations)


def mask_padding(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Zero the pad positions of ``x`` (B, L, C); ``keep=None`` means there are none."""
    return x if keep is None else x * keep


class ResidualBlock(nn.Module):
    """conv(d) -> LayerNorm -> ReLU -> conv(2d) -> LayerNorm -> ReLU, plus the block input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        self.conv1 = DilatedConv1d(channels, kernel_size, dilation, causal)
        self.ln1 = nn.LayerNorm(channels, eps=1e-8)
        self.conv2 = DilatedConv1d(channels, kernel_size, 2 * dilation, causal)
        self.ln2 = nn.LayerNorm(channels, eps=1e-8)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """``keep`` is (B, L, 1), 1 at real positions and 0 at [PAD]; None when the batch has no padding."""
        h = mask_padding(torch.relu(self.ln1(self.conv1(x))), keep)
        h = mask_padding(torch.relu(self.ln2(self.conv2(h))), keep)
        return x + h


class NextItNet(nn.Module):
    """The NextItNet backbone: ``backbone(seqs)`` maps a LongTensor (B, L) to hidden states (B, L, C).

    ``num_items`` counts real items; ids 0-3 are [PAD], [MASK], [CLS], [UNK] and real items start at 4.
    Item vectors come from ``item_encoder`` (default: an :class:`IdItemEncoder` table of ``num_items + 4``
    rows, ``sparse_embedding`` giving it sparse row gradients for SparseAdam). ``dilations`` gives one
    entry per residual block; each block's second convolution uses twice its dilation, so the default
    ``(1, 4) * 4`` yields the 1, 2, 4, 8 pattern four times (16 convolutions).
    """

    def __init__(
        self,
        num_items: int,
        channels: int = 64,
        dilations: Sequence[int] = DEFAULT_DILATIONS,
        kernel_size: int = 3,
        causal: bool = True,
        sparse_embedding: bool = False,
        item_encoder: ItemEncoder | None = None,
    ):
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        self.num_items = num_items
        self.channels = channels
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_size = kernel_size
        self.causal = causal
        if item_encoder is None:
            item_encoder = IdItemEncoder(num_items, channels, sparse=sparse_embedding)
        elif (item_encoder.num_items, item_encoder.channels) != (num_items, channels):
            raise ValueError(
                f"item_encoder has {item_encoder.num_items} items x {item_encoder.channels} channels, "
                f"the backbone {num_items} x {channels}"
            )
        self.item_encoder = item_encoder
        # Input adapters (shape "input" in peterrec.model.adapters): (x, keep) -> (x, keep) before block 0.
        self.input_adapters = nn.ModuleList()
        self.blocks = nn.ModuleList(ResidualBlock(channels, kernel_size, d, causal) for d in self.dilations)

    @property
    def receptive_field(self) -> int:
        """How many positions (the current one included) can influence one output."""
        return receptive_field(self.dilations, self.kernel_size)

    def check_length(self, max_len: int) -> None:
        """Warn when sequences are longer than what the stack can see at once."""
        if max_len > self.receptive_field:
            logger.warning(
                "max_len %d exceeds the receptive field of %d positions: the oldest items of long "
                "sequences cannot influence the output; add blocks or larger dilations to use them",
                max_len,
                self.receptive_field,
            )

    def forward(self, seqs: torch.Tensor, cls_vector: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L, C) of left-padded ids (B, L); ``cls_vector`` stands in for [CLS] if given."""
        return self.layer_states(seqs, cls_vector, keep_all=False)[-1]

    def layer_states(
        self, seqs: torch.Tensor, cls_vector: torch.Tensor | None = None, keep_all: bool = True
    ) -> list[torch.Tensor]:
        """The states (B, L, C) of every layer: the item vectors (after input adapters) and the output of
        each residual block, the last being :meth:`forward`'s. ``keep_all=False``: the last one only."""
        x = self.item_encoder(seqs, cls_vector)
        keep = self.item_encoder.padding_mask(seqs, x.dtype)
        x = mask_padding(x, keep)
        for adapter in self.input_adapters:
            x, keep = adapter(x, keep)
        length = seqs.shape[1]  # input adapters may have added positions (prompts) before the items
        states = [x[:, -length:]] if keep_all else []
        for block in self.blocks:
            x = block(x, keep)
            if keep_all:
                states.append(x[:, -length:])
        return states if keep_all else [x[:, -length:]]

    def fresh(self) -> NextItNet:
        """A newly initialised backbone of the same shape and item encoder kind (global RNG, as built)."""
        encoder = self.item_encoder.fresh()
        return NextItNet(
            self.num_items, self.channels, self.dilations, self.kernel_size, self.causal, item_encoder=encoder
        )

    def extra_repr(self) -> str:
        return (
            f"num_items={self.num_items}, channels={self.channels}, dilations={list(self.dilations)}, "
            f"kernel_size={self.kernel_size}, causal={self.causal}, receptive_field={self.receptive_field}"
        )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "DEFAULT_DILATIONS",
    "NextItNet",
    "ResidualBlock",
    "count_parameters",
    "mask_padding",
    "receptive_field",
]
