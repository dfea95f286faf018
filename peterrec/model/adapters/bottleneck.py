"""Model patches: small bottleneck branches inserted into a frozen NextItNet (PeterRec, SIGIR 2020).

A patch branch is ``Up(GELU(Down(x)))`` applied per position on (B, L, C) tensors, with hidden size
``h = max(1, round(C * ratio))``. Each patch is a module that wraps the layer it patches, so inserting
patches is one walk over the backbone and the wrapped layer keeps its own tensors. This is the
``bottleneck`` adapter kind (:class:`BottleneckAdapter`); :func:`add_patches` is the 0.1.0 entry point.

- ``serial``: ``c(x) + branch(c(x))`` after each dilated conv c, before its LayerNorm (the paper's best
  variant); wraps ``block.conv1`` and ``block.conv2``, 16 patches for 8 blocks.
- ``parallel``: ``conv(x) + branch(x)`` beside each dilated conv; 16 patches for 8 blocks.
- ``block_parallel``: ``block(x) + branch(x) * keep`` beside each residual block; wraps
  ``backbone.blocks[i]``, 8 patches for 8 blocks.

State-dict keys gain one wrapper level. Serial/parallel: ``blocks.0.conv1.weight`` becomes
``blocks.0.conv1.conv.weight`` and the patch adds ``blocks.0.conv1.branch.{down,up}.{weight,bias}``.
Block-parallel: ``blocks.0.conv1.weight`` becomes ``blocks.0.block.conv1.weight`` and the patch adds
``blocks.0.branch.*``. :func:`base_state_dict` and :func:`load_base_state_dict` translate to and from the
unpatched names, so a pretrained backbone checkpoint loads into a patched model (``base.py``).

Deviations from the original TensorFlow code, on purpose:

- Up starts at zero (weight and bias), so a freshly patched model computes exactly what the pretrained
  backbone computes; the original initialises Up trunc-normal.
- GELU is the exact (erf) form; the original uses the tanh approximation.
- ``parallel_form="residual"`` (default) adds only the branch beside the conv. The original code adds the
  branch together with its own skip, ``conv(x) + x + branch(x)``; ``parallel_form="original"`` reproduces
  that, and is therefore *not* the identity at initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peterrec.choices import Insertion, ParallelForm, check_choice
from peterrec.model.adapters.base import (
    Adapter,
    AdapterModule,
    Layers,
    base_state_dict,
    is_wrapped,
    load_base_state_dict,
    names_of,
    register_wrapper,
    select_layers,
)
from peterrec.model.backbone import NextItNet, ResidualBlock, mask_padding
from peterrec.model.dilated_conv import DilatedConv1d
from peterrec.model.init import trunc_normal_


def bottleneck_size(channels: int, ratio: float) -> int:
    """Hidden width h of a patch branch: ``max(1, round(channels * ratio))``."""
    if not ratio > 0:
        raise ValueError(f"patch ratio must be positive, got {ratio}")
    return max(1, round(channels * ratio))


def patch_parameter_count(channels: int, ratio: float, n: int) -> int:
    """Parameters of ``n`` patch branches: ``n * (2*C*h + h + C)``."""
    h = bottleneck_size(channels, ratio)
    return n * (2 * channels * h + h + channels)


class PatchBranch(AdapterModule):
    """``Up(GELU(Down(x)))`` per position on (B, L, C); Up is zero at init so the branch outputs zero."""

    def __init__(self, channels: int, ratio: float = 0.25):
        super().__init__()
        hidden = bottleneck_size(channels, ratio)
        self.down = nn.Linear(channels, hidden)
        self.act = nn.GELU()  # exact erf form; the original TF code uses the tanh approximation
        self.up = nn.Linear(hidden, channels)
        trunc_normal_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class SerialPatchedConv(nn.Module):
    """``conv(x) + branch(conv(x))``: the patch follows the dilated conv, before its LayerNorm."""

    def __init__(self, conv: DilatedConv1d, branch: PatchBranch):
        super().__init__()
        self.conv = conv
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + self.branch(y)


class ParallelPatchedConv(nn.Module):
    """``conv(x) + branch(x)``; with ``form="original"``, ``conv(x) + x + branch(x)`` as the TF code does."""

    def __init__(self, conv: DilatedConv1d, branch: PatchBranch, form: ParallelForm = "residual"):
        super().__init__()
        self.conv = conv
        self.branch = branch
        self.form = form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x) + self.branch(x)
        return out + x if self.form == "original" else out

    def extra_repr(self) -> str:
        return f"form={self.form!r}"


class BlockParallelPatch(nn.Module):
    """``block(x, keep) + branch(x) * keep``: one branch beside a whole residual block.

    The branch output is multiplied by ``keep`` because its biases make it nonzero at pad positions, and the
    next block's convolution must see zeros there (as the backbone guarantees after every block).
    """

    def __init__(self, block: ResidualBlock, branch: PatchBranch):
        super().__init__()
        self.block = block
        self.branch = branch

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return self.block(x, keep) + mask_padding(self.branch(x), keep)


register_wrapper(SerialPatchedConv, "conv")
register_wrapper(ParallelPatchedConv, "conv")
register_wrapper(BlockParallelPatch, "block")


@dataclass
class BottleneckOptions:
    """``insertion`` (serial / parallel / block_parallel), bottleneck ``ratio`` of the channels, and the
    ``parallel_form`` of parallel patches (``residual``: identity at init; ``original``: as the TF code)."""

    insertion: Insertion = "serial"
    ratio: float = 0.25
    parallel_form: ParallelForm = "residual"

    def __post_init__(self) -> None:
        check_choice("insertion", self.insertion, Insertion)
        check_choice("parallel_form", self.parallel_form, ParallelForm)
        if not 0.0 < self.ratio <= 4.0:
            raise ValueError(f"ratio must be in (0, 4], got {self.ratio}")


class BottleneckAdapter(Adapter):
    """PeterRec's model patches: ``serial`` / ``parallel`` wrap ``conv1`` and ``conv2`` of each chosen block
    (2 patches per block, Houlsby-like); ``serial_block`` only ``conv2``, after the block's last conv and
    before its last LayerNorm (1 per block, Pfeiffer-like); ``block_parallel`` wraps the whole block (1 per
    block)."""

    kind = "bottleneck"
    Options = BottleneckOptions
    shape = "insert"

    def attach(self, backbone: NextItNet) -> list[str]:
        if is_wrapped(backbone):
            raise ValueError("the backbone already has patches; add them to a fresh (unpatched) backbone")
        opts = self.options
        reference = next(backbone.parameters())

        def new_branch() -> PatchBranch:
            return PatchBranch(backbone.channels, opts.ratio).to(reference)

        branches: list[PatchBranch] = []
        convs = ("conv2",) if opts.insertion == "serial_block" else ("conv1", "conv2")
        for i in self.layers:
            block = backbone.blocks[i]
            if opts.insertion == "block_parallel":
                backbone.blocks[i] = BlockParallelPatch(block, new_branch())
                branches.append(backbone.blocks[i].branch)
                continue
            for name in convs:
                conv = getattr(block, name)
                if opts.insertion in ("serial", "serial_block"):
                    wrapped: nn.Module = SerialPatchedConv(conv, new_branch())
                else:
                    wrapped = ParallelPatchedConv(conv, new_branch(), form=opts.parallel_form)
                setattr(block, name, wrapped)
                branches.append(wrapped.branch)
        self.branches = branches
        return names_of(backbone, [p for branch in branches for p in branch.parameters()])

    @classmethod
    def parameter_count(cls, channels: int, options: BottleneckOptions, num_layers: int) -> int:
        per_block = 1 if options.insertion in ("block_parallel", "serial_block") else 2
        return patch_parameter_count(channels, options.ratio, per_block * num_layers)


def add_patches(
    backbone: NextItNet,
    insertion: Insertion = "serial",
    ratio: float = 0.25,
    parallel_form: ParallelForm = "residual",
    layers: Layers = "all",
) -> list[PatchBranch]:
    """Insert patch branches into ``backbone`` in place and return them (in block order).

    The 0.1.0 entry point, kept: the same as ``add_adapters(backbone, "bottleneck", ...)``. The new branches
    are created on the device and dtype of the backbone. A backbone that already has patches is refused.
    """
    adapter = BottleneckAdapter(
        BottleneckOptions(insertion, ratio, parallel_form), select_layers(layers, len(backbone.blocks))
    )
    adapter.trainable_names = adapter.attach(backbone)
    backbone.adapters = [*getattr(backbone, "adapters", []), adapter]
    return adapter.branches


def patch_branches(model: nn.Module) -> list[PatchBranch]:
    """All patch branches inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, PatchBranch)]


def patch_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the patch branches only (what PeterRec trains besides the head and norms)."""
    return [p for branch in patch_branches(model) for p in branch.parameters()]


def patch_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the patch-branch tensors of ``model``, keyed by their full names in ``model.state_dict()``."""
    prefixes = tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, PatchBranch))
    return {k: v for k, v in model.state_dict().items() if prefixes and k.startswith(prefixes)}


__all__ = [
    "BlockParallelPatch",
    "BottleneckAdapter",
    "BottleneckOptions",
    "ParallelPatchedConv",
    "PatchBranch",
    "SerialPatchedConv",
    "add_patches",
    "base_state_dict",
    "bottleneck_size",
    "load_base_state_dict",
    "patch_branches",
    "patch_parameter_count",
    "patch_parameters",
    "patch_state_dict",
]
