"""Deprecated alias of :mod:`peterrec.model.transfer`, kept for 0.1.0 code.

Import from there or from ``peterrec`` (the public API); this alias goes in 0.3.0."""

import warnings

from peterrec.model.transfer import *  # noqa: F403
from peterrec.model.transfer import (  # noqa: F401
    STRATEGY_PLANS,
    StrategyReport,
    TransferModel,
    apply_strategy,
    trainable_state_dict,
)

warnings.warn(
    "peterrec.finetune is deprecated; import from peterrec.model.transfer or the peterrec package",
    DeprecationWarning,
    stacklevel=2,
)
