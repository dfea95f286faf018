"""What every adapter kind shares: the kind interface, layer selection, and the names of wrapped layers.

An adapter kind is one :class:`Adapter` subclass. It declares

- ``kind``: its registry name (``adapter.kind`` in a finetune config);
- ``Options``: a dataclass of its options, typed, checked in ``__post_init__`` (the config loader builds
  it, so an option a kind does not have is an error naming the kind);
- ``shape``: ``insert`` (modules beside or after a layer), ``unfreeze`` (existing tensors become
  trainable) or ``input`` (a module in ``backbone.input_adapters`` that changes the input vectors);
- :meth:`Adapter.attach`, which changes the backbone and returns the names (relative to the backbone) of
  the tensors the adapter trains. Freezing, counting, saving and loading work from those names.

Insert kinds wrap the layer they patch and keep it under a fixed attribute; :func:`register_wrapper` tells
:func:`base_state_dict` how to see through the wrapper, so a pretrained (unpatched) checkpoint loads into a
patched backbone and back.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from peterrec.choices import LAYER_SELECTIONS

Shape = Literal["insert", "unfreeze", "input"]
Layers = str | Sequence[int]


class Adapter(ABC):
    """One adapter of a kind, attached to a backbone at the residual blocks ``layers``."""

    kind: ClassVar[str]
    Options: ClassVar[type]
    shape: ClassVar[Shape]

    def __init__(self, options: Any, layers: list[int]):
        self.options = options
        self.layers = layers
        self.modules = "backbone"  # or "item_encoder" / "both" (content item encoders, add_adapters)
        self.trainable_names: list[str] = []

    @abstractmethod
    def attach(self, backbone: nn.Module) -> list[str]:
        """Change ``backbone`` in place; return the names of the tensors this adapter trains."""

    @classmethod
    def parameter_count(cls, channels: int, options: Any, num_layers: int) -> int | None:
        """Trainable parameters of this kind on ``num_layers`` blocks of ``channels``, by formula.

        None for kinds whose count depends on the layers themselves (unfreeze kinds count what they
        unfreeze).
        """
        return None

    def spec(self) -> dict:
        """What re-creates this adapter: kind, layers, options (and modules, where not the backbone alone),
        recorded in a run's manifest."""
        spec = {"kind": self.kind, "layers": list(self.layers), "options": dataclasses.asdict(self.options)}
        return spec if self.modules == "backbone" else {**spec, "modules": self.modules}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.layers}, options={self.options})"


def check_positive_int(name: str, value) -> None:
    """An adapter option that must be a positive integer (a rank, a number of vectors)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def select_layers(layers: Layers, num_blocks: int) -> list[int]:
    """Block indices of ``all``, ``first_half``, ``last_half``, ``every_other`` or a list of indices
    (negative ones count from the end)."""
    if isinstance(layers, str):
        half = num_blocks // 2
        chosen = {
            "all": range(num_blocks),
            "first_half": range(half),
            "last_half": range(half, num_blocks),
            "every_other": range(0, num_blocks, 2),
        }.get(layers)
        if chosen is None:
            raise ValueError(
                f"unknown layers {layers!r}; choose {', '.join(LAYER_SELECTIONS)} or a list of blocks"
            )
        return list(chosen)
    picked = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -num_blocks <= layer < num_blocks:
            raise ValueError(f"layers: {layer!r} is not a block index of a {num_blocks}-block backbone")
        picked.append(layer % num_blocks)
    if not picked or len(set(picked)) != len(picked):
        raise ValueError(f"layers: expected distinct block indices, got {list(layers)}")
    return sorted(picked)


# Wrapper class -> attribute holding the wrapped original module (its keys lose this level in base names).
WRAPPED_ATTR: dict[type[nn.Module], str] = {}


def register_wrapper(cls: type[nn.Module], attr: str) -> None:
    """Declare that ``cls`` wraps an original layer kept as ``cls.<attr>``."""
    WRAPPED_ATTR[cls] = attr


def unwrap(module: nn.Module) -> nn.Module:
    """The original layer inside any adapter wrappers."""
    while type(module) in WRAPPED_ATTR:
        module = getattr(module, WRAPPED_ATTR[type(module)])
    return module


def is_wrapped(backbone: nn.Module) -> bool:
    return any(type(m) in WRAPPED_ATTR for m in backbone.modules())


def names_of(root: nn.Module, params: Sequence[nn.Parameter]) -> list[str]:
    """The names (in ``root.named_parameters()``) of ``params``, in module order."""
    wanted = {id(p) for p in params}
    return [name for name, p in root.named_parameters() if id(p) in wanted]


def residual_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's residual blocks, looking through wrappers around whole blocks."""
    return [unwrap(block) for block in backbone.blocks]


def _prefix(module_name: str) -> str:
    """State-dict key prefix of a submodule ('' for the root module)."""
    return f"{module_name}." if module_name else ""


class AdapterModule(nn.Module):
    """Base class of every module an adapter adds (a patch branch, an input module, ...).

    Their tensors are what an unpatched model does not have: :func:`adapter_only_keys` finds them by class.
    """


def adapter_only_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the tensors inside adapter modules."""
    prefixes = tuple(_prefix(name) for name, m in model.named_modules() if isinstance(m, AdapterModule))
    return {k for k in model.state_dict() if prefixes and k.startswith(prefixes)}


def _base_names(model: nn.Module) -> dict[str, str]:
    """Map each non-adapter state-dict key of a patched ``model`` to its name in the unpatched model."""
    wrapped = {
        _prefix(name) + f"{WRAPPED_ATTR[type(m)]}.": _prefix(name)
        for name, m in model.named_modules()
        if type(m) in WRAPPED_ATTR
    }
    added = adapter_only_keys(model)
    mapping = {}
    for key in model.state_dict():
        if key in added:
            continue
        base = key
        # Strip wrapper levels, outermost first (dict order follows named_modules, which is top-down).
        for patched_prefix, base_prefix in wrapped.items():
            if base.startswith(patched_prefix):
                base = base_prefix + base[len(patched_prefix) :]
        mapping[key] = base
    return mapping


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a patched model without its adapters, under the unpatched key names.

    The result compares equal (keys and tensors) to the pretrained backbone's own ``state_dict()`` as long as
    the backbone tensors have not been trained.
    """
    state = model.state_dict()
    return {base: state[key] for key, base in _base_names(model).items()}


def to_current_names(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors named as in the unpatched model (or already as in ``model``), renamed to ``model``'s keys."""
    to_patched = {base: key for key, base in _base_names(model).items()}
    return {to_patched.get(name, name): tensor for name, tensor in tensors.items()}


def load_base_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load an unpatched (e.g. pretrained) state dict into a patched model, leaving its adapters untouched.

    Strict: a key missing from ``state_dict`` or one the unpatched model would not have raises ``ValueError``.
    """
    to_patched = {base: key for key, base in _base_names(model).items()}
    missing = sorted(set(to_patched) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(to_patched))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match the unpatched model: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}; load an unpatched checkpoint of the "
            "same backbone architecture (use base_state_dict() to export one from a patched model)"
        )
    current = model.state_dict()
    full = {to_patched[base]: tensor for base, tensor in state_dict.items()}
    full.update({k: v for k, v in current.items() if k not in full})
    model.load_state_dict(full, strict=True)
