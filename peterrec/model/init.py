"""Weight initialisation shared by every layer of the toolkit."""

from __future__ import annotations

import torch
from torch import nn

INIT_STD = 0.02


def trunc_normal_(tensor: torch.Tensor, std: float = INIT_STD) -> torch.Tensor:
    """Truncated normal at two standard deviations, as the original TensorFlow code initialises."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)
