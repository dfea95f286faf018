"""Deprecated alias of :mod:`peterrec.runs`, kept for 0.1.0 code.

Import from there or from ``peterrec`` (the public API); this alias goes in 0.3.0."""

import warnings

from peterrec.runs import *  # noqa: F403
from peterrec.runs import BaseRun, FinetunedRun, PatchSwitcher, load_backbone, load_run  # noqa: F401

warnings.warn(
    "peterrec.run is deprecated; import from peterrec.runs or the peterrec package",
    DeprecationWarning,
    stacklevel=2,
)
