"""CPU memory allocator settings for training processes (no torch import: safe to call first thing)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TENSOR_HEAP_LIMIT = 32 * 2**20  # glibc's largest allowed mmap threshold on 64-bit
_KEEP_FREED = 2**30


def tune_cpu_allocator() -> bool:
    """Let glibc's malloc reuse freed tensor memory instead of returning it to the OS after every op.

    By default glibc serves large blocks with fresh ``mmap`` pages and hands them back on free, so every
    activation and gradient of a training step page-faults its memory in again: measured 17,000 minor
    faults and ~90 ms of kernel time per C=256 pretraining step on the project's CPU machine, ~700 and
    ~16 ms after this call (docs/performance.md). Blocks under 32 MiB then come from the heap, and up to
    1 GiB of freed heap is kept for reuse, so the resident size stays near the run's peak instead of
    shrinking between steps. Only process-wide allocator settings change, never any result.

    Called by the ``peterrec`` command line and the benchmarks; a no-op (returning False) where the C
    library is not glibc or when ``PETERREC_DEFAULT_MALLOC=1`` is set.
    """
    if not sys.platform.startswith("linux") or os.environ.get("PETERREC_DEFAULT_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _TENSOR_HEAP_LIMIT) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED) == 1
    if ok:
        logger.debug("glibc malloc: mmap threshold %d, trim threshold %d", _TENSOR_HEAP_LIMIT, _KEEP_FREED)
    return ok
