"""Compatibility shims that let RecBole 1.2.1 import under the torch and numpy of this environment.

They exist for the benchmarks only and are installed into the benchmark process, never into the
``peterrec`` package. Each shim fills a gap RecBole 1.2.1 trips over:

- numpy 2 removed ``np.float_``, ``np.complex_``, ``np.unicode_`` (and the older ``np.float``, ``np.int``,
  ...), which ``recbole.data.interaction``, ``recbole.evaluator.metrics`` and ``Config`` use;
- ``recbole.utils.utils`` imports ``torch.utils.tensorboard`` at module level; the ``tensorboard`` package is
  large and not needed to time anything, so a no-op ``SummaryWriter`` stands in when it is missing;
- ``recbole.utils.utils`` also imports ``pandas`` at module level; the model classes never use it, so when it
  is missing an empty stand-in lets ``ResidualBlock_b`` import (RecBole's data pipeline, used only by
  ``benchmarks/end_to_end.py``, needs the real pandas: ``setup_recbole.sh --end-to-end`` installs it);
- importing ``recbole.model.sequential_recommender`` runs ``sine.py``, which calls
  ``torch.autograd.set_detect_anomaly(True)`` at module level: that slows every backward pass in the process
  (ours too) several times over, so the flag is restored after the import;
- torch >= 2.6 defaults ``torch.load(weights_only=True)``, which refuses RecBole's own checkpoints (they
  pickle its ``Config``); :func:`trusted_torch_load` restores the old default for files RecBole just wrote.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.util
import sys
import types

import numpy as np
import torch

_NUMPY_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "float": float,
    "int": int,
    "bool": bool,
    "object": object,
    "str": str,
    "long": np.int64,
    "complex": complex,
}


class _NoOpSummaryWriter:
    """Accepts every SummaryWriter call and records nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def install_numpy_aliases() -> None:
    """Restore the numpy aliases RecBole 1.2.1 uses; idempotent."""
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def _stub(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    module.__dict__.update(attributes)
    return module


@contextlib.contextmanager
def missing_module_stubs():
    """Stand-ins for ``tensorboard`` and ``pandas`` while RecBole is imported, removed afterwards.

    RecBole keeps its references; taking the stubs out of ``sys.modules`` again means no other library
    (torch._dynamo probes for pandas, for one) mistakes them for the real packages.
    """
    added = []
    if importlib.util.find_spec("tensorboard") is None and "torch.utils.tensorboard" not in sys.modules:
        sys.modules["torch.utils.tensorboard"] = _stub(
            "torch.utils.tensorboard", SummaryWriter=_NoOpSummaryWriter
        )
        added.append("torch.utils.tensorboard")
    if importlib.util.find_spec("pandas") is None and "pandas" not in sys.modules:
        empty = {"Series": type("Series", (), {}), "DataFrame": type("DataFrame", (), {})}
        sys.modules["pandas"] = _stub("pandas", **empty)
        added.append("pandas")
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def install() -> None:
    """Make ``import recbole...`` work in this process: numpy aliases now, module stubs during the import."""
    install_numpy_aliases()


def import_residual_block():
    """RecBole 1.2.1's ``ResidualBlock_b`` (the block its ``NextItNet`` stacks), from RecBole itself."""
    install_numpy_aliases()
    with missing_module_stubs(), keep_anomaly_mode():
        from recbole.model.sequential_recommender.nextitnet import ResidualBlock_b

    return ResidualBlock_b


@contextlib.contextmanager
def keep_anomaly_mode():
    """Undo the module-level ``set_detect_anomaly(True)`` of recbole/model/sequential_recommender/sine.py."""
    enabled = torch.is_anomaly_enabled()
    try:
        yield
    finally:
        torch.autograd.set_detect_anomaly(enabled)


@contextlib.contextmanager
def trusted_torch_load():
    """Let RecBole reload the checkpoints it wrote itself (they pickle a ``Config``, so not weights-only)."""
    original = torch.load
    torch.load = functools.partial(original, weights_only=False)
    try:
        yield
    finally:
        torch.load = original
