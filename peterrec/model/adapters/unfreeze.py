"""Unfreeze kinds: adapters that add nothing and train tensors the backbone already has.

``unfreeze`` trains the named layers (``parts``) of the chosen residual blocks: PeterRec's trained second
LayerNorm is ``unfreeze`` of ``ln2`` in every block, FineLast1 is ``conv2`` and ``ln2`` of the last block,
FineLast2 all four layers of the last block. Wrapped layers (a patched conv) contribute only the original
layer's tensors, never the patch's.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peterrec.model.adapters.base import Adapter, names_of, residual_blocks, unwrap

BLOCK_PARTS = ("conv1", "ln1", "conv2", "ln2")


@dataclass
class UnfreezeOptions:
    """``parts``: which layers of each chosen block to train (``conv1``, ``ln1``, ``conv2``, ``ln2``)."""

    parts: list[str] | tuple[str, ...] = ("ln2",)

    def __post_init__(self) -> None:
        self.parts = tuple(self.parts)
        unknown = [p for p in self.parts if p not in BLOCK_PARTS]
        if unknown or not self.parts:
            raise ValueError(
                f"parts must name layers of a block ({', '.join(BLOCK_PARTS)}), got {self.parts}"
            )


class UnfreezeAdapter(Adapter):
    """Train existing layers of the chosen blocks; nothing is inserted, nothing is drawn at random."""

    kind = "unfreeze"
    Options = UnfreezeOptions
    shape = "unfreeze"

    def attach(self, backbone: nn.Module) -> list[str]:
        blocks = residual_blocks(backbone)
        params = [
            p
            for i in self.layers
            for part in self.options.parts
            for p in unwrap(getattr(blocks[i], part)).parameters()
        ]
        return names_of(backbone, params)


@dataclass
class NoOptions:
    """This kind has no options."""


class BitFitAdapter(Adapter):
    """BitFit: only the biases of the chosen blocks train (both convs and both LayerNorms)."""

    kind = "bitfit"
    Options = NoOptions
    shape = "unfreeze"

    def attach(self, backbone: nn.Module) -> list[str]:
        blocks = residual_blocks(backbone)
        params = [unwrap(getattr(blocks[i], part)).bias for i in self.layers for part in BLOCK_PARTS]
        return names_of(backbone, params)

    @classmethod
    def parameter_count(cls, channels: int, options: NoOptions, num_layers: int) -> int:
        return 4 * channels * num_layers


class LayerNormAdapter(Adapter):
    """LayerNorm-only: both LayerNorms (scale and shift) of the chosen blocks train."""

    kind = "layernorm"
    Options = NoOptions
    shape = "unfreeze"

    def attach(self, backbone: nn.Module) -> list[str]:
        blocks = residual_blocks(backbone)
        params = [
            p for i in self.layers for part in ("ln1", "ln2") for p in getattr(blocks[i], part).parameters()
        ]
        return names_of(backbone, params)

    @classmethod
    def parameter_count(cls, channels: int, options: NoOptions, num_layers: int) -> int:
        return 4 * channels * num_layers
