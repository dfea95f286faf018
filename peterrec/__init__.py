"""peterrec: parameter-efficient transfer of sequential recommenders (PeterRec on a NextItNet backbone).

The public API is importable from here, wherever the modules behind it live::

    from peterrec import NextItNet, add_adapters, add_patches, TransferModel, apply_strategy
    from peterrec import load_run, PatchSwitcher

Names are resolved on first use, so ``import peterrec`` (and the command line's ``--help``) stays fast.
"""

from importlib import import_module

from peterrec.tokens import CLS, MASK, NUM_SPECIAL_TOKENS, PAD, UNK

__version__ = "0.2.0"

_PUBLIC = {
    "NextItNet": "peterrec.model.backbone",
    "count_parameters": "peterrec.model.backbone",
    "ItemEncoder": "peterrec.model.item_encoder",
    "IdItemEncoder": "peterrec.model.item_encoder",
    "register_item_encoder": "peterrec.model.item_encoder",
    "add_adapters": "peterrec.model.adapters",
    "register_adapter": "peterrec.model.adapters",
    "add_patches": "peterrec.model.adapters.bottleneck",
    "TransferModel": "peterrec.model.transfer",
    "apply_strategy": "peterrec.model.transfer",
    "StrategyReport": "peterrec.model.transfer",
    "ClassifierHead": "peterrec.model.heads",
    "TargetItemHead": "peterrec.model.heads",
    "NextItemHead": "peterrec.model.heads",
    "load_run": "peterrec.runs",
    "load_backbone": "peterrec.runs",
    "PatchSwitcher": "peterrec.runs",
}

__all__ = ["CLS", "MASK", "NUM_SPECIAL_TOKENS", "PAD", "UNK", "__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'peterrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
