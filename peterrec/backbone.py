"""Deprecated alias of :mod:`peterrec.model.backbone`, kept for 0.1.0 code.

Import from there or from ``peterrec`` (the public API); this alias goes in 0.3.0."""

import warnings

from peterrec.model.backbone import *  # noqa: F403
from peterrec.model.backbone import NextItNet, count_parameters  # noqa: F401

warnings.warn(
    "peterrec.backbone is deprecated; import from peterrec.model.backbone or the peterrec package",
    DeprecationWarning,
    stacklevel=2,
)
