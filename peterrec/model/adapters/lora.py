"""LoRA on the dilated convolutions: a low-rank branch computed from the conv's own taps.

A dilated conv computes ``taps(x) @ W.T + b`` with ``W`` of shape (C, k·C). LoRA adds
``(alpha / r) · taps(x) @ A.T @ B.T`` with ``A`` (r, k·C) trunc-normal and ``B`` (C, r) zero, so the patched
model equals the pretrained one at initialisation. The frozen conv still runs through its own autograd
function, which skips its weight gradient and keeps no taps; the branch never forms ``W + sBA``. Because
``A`` acts tap by tap, ``taps(x) @ A.T`` is computed as ``x @ A_j.T`` for every tap j and then shifted and
summed, which keeps (B, L, C) alive for backward instead of the (B, L, k·C) taps. :func:`merge_lora` folds
the branch into ``W`` (``W += s·B·A``) and removes the wrapper, so inference costs nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from peterrec.model.adapters.base import (
    Adapter,
    AdapterModule,
    check_positive_int,
    names_of,
    register_wrapper,
    residual_blocks,
)
from peterrec.model.dilated_conv import DilatedConv1d
from peterrec.model.init import trunc_normal_


class LoRABranch(AdapterModule):
    """``scale · B(A(taps(x)))`` for one dilated conv; zero at init (``B`` starts at zero)."""

    def __init__(self, conv: DilatedConv1d, rank: int, alpha: float):
        super().__init__()
        channels = conv.weight.shape[0]
        self.rank, self.scale, self.shifts = rank, alpha / rank, conv.shifts
        self.lora_a = nn.Parameter(trunc_normal_(torch.empty(rank, conv.weight.shape[1]), std=0.02))
        self.lora_b = nn.Parameter(torch.zeros(channels, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, channels = x.shape
        k = len(self.shifts)
        per_tap = self.lora_a.view(self.rank, k, channels).transpose(0, 1).reshape(k * self.rank, channels)
        projected = (x @ per_tap.t()).view(batch, length, k, self.rank)
        down = sum(_shift(projected[:, :, j], shift) for j, shift in enumerate(self.shifts))
        return (down @ self.lora_b.t()) * self.scale

    def delta_weight(self) -> torch.Tensor:
        """What merging adds to the conv weight: ``scale · B @ A`` (C, k·C)."""
        return self.scale * self.lora_b @ self.lora_a


def _shift(y: torch.Tensor, shift: int) -> torch.Tensor:
    """(B, L, r) -> output t reads input t - shift (zeros shifted in), as a dilated conv's tap does."""
    length = y.shape[1]
    if shift == 0:
        return y
    if abs(shift) >= length:
        return torch.zeros_like(y)
    if shift > 0:
        return F.pad(y[:, : length - shift], (0, 0, shift, 0))
    return F.pad(y[:, -shift:], (0, 0, 0, -shift))


class LoRAConv(nn.Module):
    """``conv(x) + branch(x)``: the frozen conv and its low-rank update, computed apart."""

    def __init__(self, conv: DilatedConv1d, branch: LoRABranch):
        super().__init__()
        self.conv = conv
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.branch(x)


register_wrapper(LoRAConv, "conv")


@dataclass
class LoRAOptions:
    """``rank`` r of the update and ``alpha`` (the update is scaled by alpha / r)."""

    rank: int = 8
    alpha: float = 16.0

    def __post_init__(self) -> None:
        check_positive_int("rank", self.rank)
        if not self.alpha > 0 or self.alpha == float("inf"):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha}")


class LoRAAdapter(Adapter):
    """LoRA on both dilated convs of each chosen block."""

    kind = "lora"
    Options = LoRAOptions
    shape = "insert"

    def attach(self, backbone) -> list[str]:
        reference = next(backbone.parameters())
        branches = []
        for i in self.layers:
            block = residual_blocks(backbone)[i]
            for name in ("conv1", "conv2"):
                conv = getattr(block, name)
                if not isinstance(conv, DilatedConv1d):
                    raise ValueError(
                        f"block {i} {name} is already wrapped; add LoRA to an unpatched backbone"
                    )
                branch = LoRABranch(conv, self.options.rank, self.options.alpha).to(reference)
                setattr(block, name, LoRAConv(conv, branch))
                branches.append(branch)
        return names_of(backbone, [p for branch in branches for p in branch.parameters()])

    @classmethod
    def parameter_count(
        cls, channels: int, options: LoRAOptions, num_layers: int, kernel_size: int = 3
    ) -> int:
        """Two convs per block, each ``r · (k·C + C)``."""
        return 2 * num_layers * options.rank * (kernel_size * channels + channels)


def merge_lora(backbone: nn.Module) -> int:
    """Fold every LoRA branch into its conv weight and remove the wrappers; returns how many were merged."""
    merged = 0
    for block in residual_blocks(backbone):
        for name in ("conv1", "conv2"):
            wrapper = getattr(block, name)
            if isinstance(wrapper, LoRAConv):
                with torch.no_grad():
                    wrapper.conv.weight += wrapper.branch.delta_weight().to(wrapper.conv.weight.dtype)
                setattr(block, name, wrapper.conv)
                merged += 1
    backbone.adapters = [a for a in getattr(backbone, "adapters", []) if a.kind != "lora"]
    return merged


__all__ = ["LoRAAdapter", "LoRABranch", "LoRAConv", "LoRAOptions", "merge_lora"]
