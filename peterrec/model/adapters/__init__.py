"""Adapters: the small trainable parts of a transfer, one registry behind one entry point.

:func:`add_adapters` adds an adapter of a registered kind to a backbone (or to a model that has one as
``.backbone``) and records it in ``backbone.adapters``; each adapter declares the names of the tensors it
trains, and :func:`peterrec.model.transfer.apply_strategy` freezes everything else by those names. A new
kind is one :class:`~peterrec.model.adapters.base.Adapter` subclass plus :func:`register_adapter`.

Built-in kinds: ``bottleneck`` (PeterRec's patches: serial, serial_block, parallel, block_parallel),
``lora`` (low-rank updates of the dilated convs, mergeable), ``item_lora`` (a low-rank offset of the input
item table, mergeable), ``bitfit`` (biases only), ``layernorm`` (LayerNorms only), ``prompt`` (soft prompt
vectors before the oldest click) and ``unfreeze`` (named existing layers made trainable: PeterRec's second
LayerNorms, FineLast1/2).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from peterrec.choices import AdapterModules, check_choice
from peterrec.model.adapters.base import (
    Adapter,
    AdapterModule,
    Layers,
    base_state_dict,
    load_base_state_dict,
    register_wrapper,
    select_layers,
)
from peterrec.model.adapters.bottleneck import BottleneckAdapter, add_patches
from peterrec.model.adapters.item_lora import ItemLoRAAdapter, merge_item_lora
from peterrec.model.adapters.lora import LoRAAdapter, merge_lora
from peterrec.model.adapters.prompt import PromptAdapter
from peterrec.model.adapters.unfreeze import BitFitAdapter, LayerNormAdapter, UnfreezeAdapter

ADAPTERS: dict[str, type[Adapter]] = {}


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Register an adapter kind under ``cls.kind`` (usable as a class decorator)."""
    if not (dataclasses.is_dataclass(cls.Options) and cls.shape in ("insert", "unfreeze", "input")):
        raise TypeError(f"{cls.__name__}: Options must be a dataclass and shape insert, unfreeze or input")
    ADAPTERS[cls.kind] = cls
    return cls


for _kind in (
    BottleneckAdapter,
    LoRAAdapter,
    ItemLoRAAdapter,
    BitFitAdapter,
    LayerNormAdapter,
    PromptAdapter,
    UnfreezeAdapter,
):
    register_adapter(_kind)


def adapter_class(kind: str) -> type[Adapter]:
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter kind {kind!r}; registered: {', '.join(ADAPTERS)}")
    return ADAPTERS[kind]


def adapter_options(kind: str, options: dict[str, Any]) -> Any:
    """The kind's ``Options`` built from ``options``; an option the kind does not have is an error."""
    cls = adapter_class(kind)
    known = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"adapter kind {kind!r} has no option {unknown[0]!r} (its options: {', '.join(sorted(known))})"
        )
    return cls.Options(**options)


def backbone_of(model: nn.Module) -> nn.Module:
    """``model`` itself if it is a backbone, else its ``.backbone``."""
    return model if hasattr(model, "blocks") else model.backbone


def add_adapters(
    model: nn.Module,
    kind: str,
    *,
    layers: Layers = "all",
    modules: AdapterModules = "backbone",
    **options: Any,
) -> Adapter:
    """Add an adapter of ``kind`` to the backbone of ``model`` in place and return it.

    ``modules``: the ``backbone`` (default), a content item encoder (``item_encoder``: a bottleneck branch
    on the projected item vectors) or ``both``; ``auto`` is ``both`` with a content encoder and a
    bottleneck kind, else ``backbone``.
    ``layers`` picks residual blocks (``all``, ``first_half``, ``last_half``, ``every_other`` or a list of
    indices); ``options`` are the kind's own (e.g. ``insertion``, ``ratio`` for ``bottleneck``). The
    adapter's ``trainable_names`` are relative to the backbone. Random draws (new layers) come from the
    global RNG, in block order.
    """
    check_choice("modules", modules, AdapterModules)
    cls = adapter_class(kind)
    backbone = backbone_of(model)
    if modules == "auto":  # into a content item encoder too, where there is one (and the kind fits it)
        content = getattr(backbone.item_encoder, "uses_content", False) and kind == "bottleneck"
        modules = "both" if content else "backbone"
    if modules != "backbone":
        _check_item_encoder_adapter(backbone.item_encoder, kind, modules)
    adapter = cls(adapter_options(kind, options), select_layers(layers, len(backbone.blocks)))
    adapter.modules = modules
    names = adapter.attach(backbone) if modules != "item_encoder" else []
    if modules != "backbone":
        names += [f"item_encoder.{n}" for n in backbone.item_encoder.add_adapter(adapter.options.ratio)]
    adapter.trainable_names = names
    backbone.adapters = [*getattr(backbone, "adapters", []), adapter]
    return adapter


def _check_item_encoder_adapter(encoder: nn.Module, kind: str, modules: str) -> None:
    """Adapters go into content item encoders only, and only the bottleneck kind (a branch on the
    projected item vector)."""
    if not getattr(encoder, "uses_content", False):
        raise ValueError(
            f"modules={modules!r}: the ID item encoder has no layers to adapt; adapters go into the backbone "
            "(content encoders, model.item_encoder text or id+text, take them)"
        )
    if kind != "bottleneck":
        raise ValueError(
            f"modules={modules!r}: only bottleneck adapters go into the item encoder, not {kind!r}"
        )


def adapters_of(model: nn.Module) -> list[Adapter]:
    """The adapters added to the backbone of ``model``, in the order they were added."""
    return list(getattr(backbone_of(model), "adapters", []))


def add_adapter_specs(model: nn.Module, specs: list[dict]) -> list[Adapter]:
    """Re-create adapters from their recorded :meth:`Adapter.spec` (loading a run)."""
    return [
        add_adapters(
            model, s["kind"], layers=s["layers"], modules=s.get("modules", "backbone"), **s["options"]
        )
        for s in specs
    ]


__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterModule",
    "add_adapter_specs",
    "add_adapters",
    "add_patches",
    "adapter_class",
    "adapter_options",
    "adapters_of",
    "base_state_dict",
    "load_base_state_dict",
    "merge_item_lora",
    "merge_lora",
    "register_adapter",
    "register_wrapper",
    "select_layers",
]
