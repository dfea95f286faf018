"""NextItNet: stacked dilated residual convolutions over item-id sequences (Yuan et al., WSDM 2019).

Sequences are left-padded with [PAD] (id 0) so the last position holds the newest item. There is no
positional embedding. Every tensor that enters a convolution is zero at pad positions, so the outputs
of a sequence do not depend on how much padding its batch has.

All layers work channels-last, (batch, length, channels): a dilated convolution is one matmul over the
``kernel_size`` shifted copies of its input, which avoids the transposes a ``Conv1d`` would need
around every LayerNorm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from peterrec import NUM_SPECIAL_TOKENS, PAD

logger = logging.getLogger(__name__)

DEFAULT_DILATIONS = (1, 4) * 4
INIT_STD = 0.02


def trunc_normal_(tensor: torch.Tensor, std: float = INIT_STD) -> torch.Tensor:
    """Truncated normal at two standard deviations, as the original TensorFlow code initialises."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def receptive_field(dilations: Sequence[int], kernel_size: int) -> int:
    """Positions seen by one output of a stack whose blocks use dilations d and 2d."""
    return 1 + (kernel_size - 1) * sum(3 * d for d in dilations)


class DilatedConv1d(nn.Module):
    """A 1-D dilated convolution on (B, L, C) input; causal pads left only, non-causal pads both sides."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        if not causal and kernel_size % 2 == 0:
            raise ValueError("a non-causal convolution needs an odd kernel_size to stay centred")
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.causal = causal
        span = (kernel_size - 1) * dilation
        self.padding = (span, 0) if causal else (span // 2, span // 2)
        # weight[:, j*C:(j+1)*C] is tap j; tap kernel_size-1 is the current position when causal.
        self.weight = nn.Parameter(trunc_normal_(torch.empty(channels, kernel_size * channels)))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        padded = F.pad(x, (0, 0, *self.padding))
        taps = [padded[:, j * self.dilation : j * self.dilation + length] for j in range(self.kernel_size)]
        return F.linear(torch.cat(taps, dim=-1), self.weight, self.bias)


class ResidualBlock(nn.Module):
    """conv(d) -> LayerNorm -> ReLU -> conv(2d) -> LayerNorm -> ReLU, plus the block input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        self.conv1 = DilatedConv1d(channels, kernel_size, dilation, causal)
        self.ln1 = nn.LayerNorm(channels, eps=1e-8)
        self.conv2 = DilatedConv1d(channels, kernel_size, 2 * dilation, causal)
        self.ln2 = nn.LayerNorm(channels, eps=1e-8)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.ln1(self.conv1(x))) * keep
        h = torch.relu(self.ln2(self.conv2(h))) * keep
        return x + h


class NextItNet(nn.Module):
    """The NextItNet backbone: ``backbone(seqs)`` maps a LongTensor (B, L) to hidden states (B, L, C).

    ``num_items`` counts real items; ids 0-3 are [PAD], [MASK], [CLS], [UNK] and real items start at 4,
    so the embedding has ``num_items + 4`` rows. ``dilations`` gives one entry per residual block; each
    block's second convolution uses twice its dilation, so the default ``(1, 4) * 4`` yields the
    1, 2, 4, 8 pattern four times (16 convolutions).
    """

    def __init__(
        self,
        num_items: int,
        channels: int = 64,
        dilations: Sequence[int] = DEFAULT_DILATIONS,
        kernel_size: int = 3,
        causal: bool = True,
        sparse_embedding: bool = False,
    ):
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        self.num_items = num_items
        self.channels = channels
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_size = kernel_size
        self.causal = causal
        # sparse_embedding: gradients touch only the looked-up rows (for SparseAdam on huge vocabularies)
        self.item_embedding = nn.Embedding(num_items + NUM_SPECIAL_TOKENS, channels, sparse=sparse_embedding)
        trunc_normal_(self.item_embedding.weight)
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

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        keep = (seqs != PAD).unsqueeze(-1).to(self.item_embedding.weight.dtype)
        x = self.item_embedding(seqs) * keep
        for block in self.blocks:
            x = block(x, keep)
        return x

    def extra_repr(self) -> str:
        return (
            f"num_items={self.num_items}, channels={self.channels}, dilations={list(self.dilations)}, "
            f"kernel_size={self.kernel_size}, causal={self.causal}, receptive_field={self.receptive_field}"
        )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = ["NextItNet", "ResidualBlock", "DilatedConv1d", "count_parameters", "trunc_normal_"]
