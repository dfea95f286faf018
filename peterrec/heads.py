"""Deprecated alias of :mod:`peterrec.model.heads`, kept for 0.1.0 code.

Import from there or from ``peterrec`` (the public API); this alias goes in 0.3.0."""

import warnings

from peterrec.model.heads import *  # noqa: F403
from peterrec.model.heads import ClassifierHead, NextItemHead, TargetItemHead  # noqa: F401

warnings.warn(
    "peterrec.heads is deprecated; import from peterrec.model.heads or the peterrec package",
    DeprecationWarning,
    stacklevel=2,
)
