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


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware here: a CUDA GPU that supports bf16, or a CPU with AVX512-BF16
    or AMX (read from /proc/cpuinfo; elsewhere False). Emulated bf16 is many times slower than fp32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: ``bf16`` autocast where :func:`native_bf16` says the hardware has it, else ``fp32``."""
    if name != "auto":
        return name
    return "bf16" if native_bf16(device) else "fp32"


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak allocated memory on CUDA; None on CPU (measure CPU peaks in a separate process)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None
