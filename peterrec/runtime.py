"""Seeds, devices and precision: the few process-wide settings a run depends on."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from peterrec.errors import ConfigError

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) in one place."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'")
    return torch.device(name)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak allocated memory on CUDA; None on CPU (measure CPU peaks in a separate process)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None
