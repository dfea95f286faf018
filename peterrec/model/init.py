"""Weight initialisation shared by every layer of the toolkit."""

from __future__ import annotations

import torch
from torch import nn

INIT_STD = 0.02
# the standard deviation trunc_normal_ actually draws with: a normal cut at ±2σ keeps 0.8796 of its σ
TRUNCATED_INIT_STD = INIT_STD * 0.8796


def trunc_normal_(tensor: torch.Tensor, std: float = INIT_STD) -> torch.Tensor:
    """Truncated normal at two standard deviations, as the original TensorFlow code initialises."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)
