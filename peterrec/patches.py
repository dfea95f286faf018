"""Deprecated alias of :mod:`peterrec.model.adapters.bottleneck`, kept for 0.1.0 code.

Import from there or from ``peterrec`` (the public API); this alias goes in 0.3.0."""

import warnings

from peterrec.model.adapters.bottleneck import *  # noqa: F403
from peterrec.model.adapters.bottleneck import add_patches, base_state_dict, patch_parameter_count  # noqa: F401

warnings.warn(
    "peterrec.patches is deprecated; import from peterrec.model.adapters.bottleneck or the peterrec package",
    DeprecationWarning,
    stacklevel=2,
)
