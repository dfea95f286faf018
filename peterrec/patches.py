"""Model patches: small bottleneck branches inserted into a frozen NextItNet (PeterRec, SIGIR 2020).

A patch branch is ``Up(GELU(Down(x)))`` applied per position on (B, L, C) tensors, with hidden size
``h = max(1, round(C * ratio))``. Each patch is a module that wraps the layer it patches, so inserting
patches is one walk over the backbone (:func:`add_patches`) and the wrapped layer keeps its own tensors.

- ``serial``: ``c(x) + branch(c(x))`` after each dilated conv c, before its LayerNorm (the paper's best
  variant); wraps ``block.conv1`` and ``block.conv2``, 16 patches for 8 blocks.
- ``parallel``: ``conv(x) + branch(x)`` beside each dilated conv; 16 patches for 8 blocks.
- ``block_parallel``: ``block(x) + branch(x) * keep`` beside each residual block; wraps
  ``backbone.blocks[i]``, 8 patches for 8 blocks.

State-dict keys gain one wrapper level. Serial/parallel: ``blocks.0.conv1.weight`` becomes
``blocks.0.conv1.conv.weight`` and the patch adds ``blocks.0.conv1.branch.{down,up}.{weight,bias}``.
Block-parallel: ``blocks.0.conv1.weight`` becomes ``blocks.0.block.conv1.weight`` and the patch adds
``blocks.0.branch.*``. :func:`base_state_dict` and :func:`load_base_state_dict` translate to and from the
unpatched names, so a pretrained backbone checkpoint loads into a patched model.

Deviations from the original TensorFlow code, on purpose:

- Up starts at zero (weight and bias), so a freshly patched model computes exactly what the pretrained
  backbone computes; the original initialises Up trunc-normal.
- GELU is the exact (erf) form; the original uses the tanh approximation.
- ``parallel_form="residual"`` (default) adds only the branch beside the conv. The original code adds the
  branch together with its own skip, ``conv(x) + x + branch(x)``; ``parallel_form="original"`` reproduces
  that, and is therefore *not* the identity at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from peterrec.backbone import DilatedConv1d, NextItNet, ResidualBlock, mask_padding, trunc_normal_

INSERTIONS = ("serial", "parallel", "block_parallel")
PARALLEL_FORMS = ("residual", "original")


def bottleneck_size(channels: int, ratio: float) -> int:
    """Hidden width h of a patch branch: ``max(1, round(channels * ratio))``."""
    if ratio <= 0:
        raise ValueError(f"patch ratio must be positive, got {ratio}")
    return max(1, round(channels * ratio))


def patch_parameter_count(channels: int, ratio: float, n: int) -> int:
    """Parameters of ``n`` patch branches: ``n * (2*C*h + h + C)``."""
    h = bottleneck_size(channels, ratio)
    return n * (2 * channels * h + h + channels)


class PatchBranch(nn.Module):
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

    def __init__(self, conv: DilatedConv1d, branch: PatchBranch, form: str = "residual"):
        super().__init__()
        if form not in PARALLEL_FORMS:
            raise ValueError(f"unknown parallel_form {form!r}; choose one of {', '.join(PARALLEL_FORMS)}")
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


# Wrapper class -> attribute holding the wrapped original module (its keys lose this level in base names).
_WRAPPED_ATTR: dict[type[nn.Module], str] = {
    SerialPatchedConv: "conv",
    ParallelPatchedConv: "conv",
    BlockParallelPatch: "block",
}


def add_patches(
    backbone: NextItNet,
    insertion: str = "serial",
    ratio: float = 0.25,
    parallel_form: str = "residual",
) -> list[PatchBranch]:
    """Insert patch branches into ``backbone`` in place and return them (in block order).

    ``serial`` / ``parallel`` wrap ``block.conv1`` and ``block.conv2`` of every block (2 patches per block);
    ``block_parallel`` wraps every ``backbone.blocks[i]`` (1 patch per block). The new branches are created on
    the device and dtype of the backbone. A backbone that already has patches is refused.
    """
    if insertion not in INSERTIONS:
        raise ValueError(f"unknown insertion {insertion!r}; choose one of {', '.join(INSERTIONS)}")
    if parallel_form not in PARALLEL_FORMS:
        raise ValueError(
            f"unknown parallel_form {parallel_form!r}; choose one of {', '.join(PARALLEL_FORMS)}"
        )
    if any(isinstance(m, tuple(_WRAPPED_ATTR)) for m in backbone.modules()):
        raise ValueError("the backbone already has patches; add them to a fresh (unpatched) backbone")
    reference = next(backbone.parameters())

    def new_branch() -> PatchBranch:
        return PatchBranch(backbone.channels, ratio).to(reference)

    branches: list[PatchBranch] = []
    for i, block in enumerate(backbone.blocks):
        if insertion == "block_parallel":
            wrapper = BlockParallelPatch(block, new_branch())
            backbone.blocks[i] = wrapper
            branches.append(wrapper.branch)
            continue
        for name in ("conv1", "conv2"):
            conv = getattr(block, name)
            if insertion == "serial":
                wrapped: nn.Module = SerialPatchedConv(conv, new_branch())
            else:
                wrapped = ParallelPatchedConv(conv, new_branch(), form=parallel_form)
            setattr(block, name, wrapped)
            branches.append(wrapped.branch)
    return branches


def patch_branches(model: nn.Module) -> list[PatchBranch]:
    """All patch branches inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, PatchBranch)]


def patch_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the patch branches only (what PeterRec trains besides the head and norms)."""
    return [p for branch in patch_branches(model) for p in branch.parameters()]


def patch_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the patch-branch tensors of ``model``, keyed by their full names in ``model.state_dict()``."""
    prefixes = tuple(_prefix(name) for name, m in model.named_modules() if isinstance(m, PatchBranch))
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}


def _prefix(module_name: str) -> str:
    """State-dict key prefix of a submodule ('' for the root module)."""
    return f"{module_name}." if module_name else ""


def _base_names(model: nn.Module) -> dict[str, str]:
    """Map each non-patch state-dict key of a patched ``model`` to its name in the unpatched model."""
    wrapped = {
        _prefix(name) + f"{_WRAPPED_ATTR[type(m)]}.": _prefix(name)
        for name, m in model.named_modules()
        if type(m) in _WRAPPED_ATTR
    }
    branches = set(patch_state_dict(model))
    mapping = {}
    for key in model.state_dict():
        if key in branches:
            continue
        base = key
        # Strip wrapper levels, outermost first (dict order follows named_modules, which is top-down).
        for patched_prefix, base_prefix in wrapped.items():
            if base.startswith(patched_prefix):
                base = base_prefix + base[len(patched_prefix) :]
        mapping[key] = base
    return mapping


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a patched model without its patches, under the unpatched key names.

    The result compares equal (keys and tensors) to the pretrained backbone's own ``state_dict()`` as long as
    the backbone tensors have not been trained.
    """
    state = model.state_dict()
    return {base: state[key] for key, base in _base_names(model).items()}


def load_base_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load an unpatched (e.g. pretrained) state dict into a patched model, leaving its patches untouched.

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
    full = {to_patched[base]: tensor for base, tensor in state_dict.items()}
    full.update(patch_state_dict(model))
    model.load_state_dict(full, strict=True)


__all__ = [
    "INSERTIONS",
    "PARALLEL_FORMS",
    "PatchBranch",
    "SerialPatchedConv",
    "ParallelPatchedConv",
    "BlockParallelPatch",
    "add_patches",
    "base_state_dict",
    "bottleneck_size",
    "load_base_state_dict",
    "patch_branches",
    "patch_parameter_count",
    "patch_parameters",
    "patch_state_dict",
]
