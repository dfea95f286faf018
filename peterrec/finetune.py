"""Transfer a pretrained NextItNet to a downstream task: the model, and what each strategy trains.

:class:`TransferModel` is a backbone plus a task head on a user representation (B, C).
:func:`apply_strategy` prepares it in place for one transfer strategy (patches, re-initialisation,
``requires_grad``) and returns a :class:`StrategyReport` with exact parameter counts.

| strategy     | trained                                               | backbone                   |
|--------------|-------------------------------------------------------|----------------------------|
| ``peterrec``   | patches + head + LayerNorms per ``train_norms``     | pretrained, frozen         |
| ``fine_all``   | everything                                          | pretrained                 |
| ``fine_cls``   | head                                                | pretrained, frozen         |
| ``fine_last1`` | last block's conv2 and ln2 + head                   | pretrained, rest frozen    |
| ``fine_last2`` | last block's conv1, conv2, ln1, ln2 + head          | pretrained, rest frozen    |
| ``peter_zero`` | as ``peterrec``                                     | random (seeded), frozen    |
| ``scratch``    | everything                                          | random (seeded)            |

A trainable [CLS] embedding (``train_cls=True``) is trained by every strategy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from peterrec import CLS, PAD
from peterrec.backbone import NextItNet, ResidualBlock, count_parameters
from peterrec.patches import (
    INSERTIONS,
    PARALLEL_FORMS,
    BlockParallelPatch,
    add_patches,
    load_base_state_dict,
    patch_parameters,
)

STRATEGIES = ("peterrec", "fine_all", "fine_cls", "fine_last1", "fine_last2", "peter_zero", "scratch")
TRAIN_NORMS = ("ln2", "none", "all")
POOLINGS = ("auto", "cls_end", "first_last", "mean")

_PATCHED = ("peterrec", "peter_zero")
_REINITIALISED = ("peter_zero", "scratch")


class TransferModel(nn.Module):
    """A (pretrained) backbone and a task head: ``model(seqs)`` is ``head(user_representation(seqs))``.

    ``pooling`` says how hidden states (B, L, C) become one vector per user:

    - ``cls_end``: append [CLS] to each left-padded sequence and read that last position. The only choice
      for a causal backbone, where the last position is the only one that has seen the whole sequence.
    - ``first_last``: mean of the hidden states at the first and the last real positions (non-causal only).
    - ``mean``: mean over real positions, [PAD] excluded (non-causal only).
    - ``auto``: ``cls_end``.

    The [CLS] vector is the backbone's ``item_embedding`` row CLS. With ``train_cls=True`` the model owns a
    separate parameter ``cls_embedding`` (C,), initialised from that row and used in its place, so the
    backbone's row is never changed by training [CLS].
    """

    def __init__(self, backbone: NextItNet, head: nn.Module, pooling: str = "auto", train_cls: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        if backbone.causal and pooling not in ("auto", "cls_end"):
            raise ValueError(
                f"pooling {pooling!r} needs a non-causal backbone; a causal backbone only supports "
                "'cls_end' (or 'auto'), because only its last position has seen the whole sequence"
            )
        self.backbone = backbone
        self.head = head
        self.pooling = "cls_end" if pooling == "auto" else pooling
        self.cls_embedding: nn.Parameter | None = None
        if train_cls:
            self.cls_embedding = nn.Parameter(backbone.item_embedding.weight[CLS].detach().clone())

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Head outputs for left-padded item sequences (B, L), e.g. class logits or item scores."""
        return self.head(self.user_representation(seqs))

    def user_representation(self, seqs: torch.Tensor) -> torch.Tensor:
        """One vector (B, C) per left-padded sequence (B, L), pooled as ``self.pooling`` says."""
        if self.pooling == "cls_end":
            cls = torch.full((len(seqs), 1), CLS, dtype=seqs.dtype, device=seqs.device)
            # Appending on the right keeps the padding on the left, where the backbone expects it.
            return self._hidden(torch.cat([seqs, cls], dim=1))[:, -1]
        hidden = self._hidden(seqs)
        real = seqs != PAD
        if self.pooling == "mean":
            weights = real.unsqueeze(-1).to(hidden.dtype)
            # An all-[PAD] row has no real position; clamping gives it a zero vector instead of NaN.
            return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        # first_last: argmax returns the first maximal index, i.e. the first real position.
        first = real.int().argmax(dim=1)
        last = real.shape[1] - 1 - real.flip(1).int().argmax(dim=1)
        rows = torch.arange(len(seqs), device=seqs.device)
        return (hidden[rows, first] + hidden[rows, last]) / 2

    def _hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """Backbone hidden states, with ``cls_embedding`` standing in for the CLS row when it exists."""
        if self.cls_embedding is None:
            return self.backbone(seqs)
        # The hook lives only for this call, so a backbone shared with other models is left untouched.
        handle = self.backbone.item_embedding.register_forward_hook(self._replace_cls)
        try:
            return self.backbone(seqs)
        finally:
            handle.remove()

    def _replace_cls(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        is_cls = (inputs[0] == CLS).unsqueeze(-1)
        return torch.where(is_cls, self.cls_embedding.to(output.dtype), output)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}, train_cls={self.cls_embedding is not None}"


@dataclass
class StrategyReport:
    """Exact parameter counts after :func:`apply_strategy`.

    ``stored`` counts what a patch file for this strategy must hold: every tensor with ``requires_grad``.
    (``peter_zero``'s frozen random backbone is not stored; it is rebuilt from the strategy's ``seed``.)
    """

    strategy: str
    trainable: int
    total: int
    stored: int

    @property
    def percent(self) -> float:
        """Trainable parameters as a percentage of all parameters."""
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"trainable params: {self.trainable:,} || all params: {self.total:,} "
            f"|| trainable%: {self.percent:.2f}"
        )


def apply_strategy(
    model: TransferModel,
    strategy: str,
    *,
    insertion: str = "serial",
    ratio: float = 0.25,
    parallel_form: str = "residual",
    train_norms: str = "ln2",
    seed: int = 0,
) -> StrategyReport:
    """Prepare ``model`` in place for one transfer strategy and report its parameter counts.

    ``peter_zero`` and ``scratch`` first re-initialise the backbone exactly as ``torch.manual_seed(seed)``
    followed by a fresh ``NextItNet`` would. ``peterrec`` and ``peter_zero`` then insert patches
    (``insertion``, ``ratio``, ``parallel_form``; see :func:`peterrec.patches.add_patches`), drawn from
    ``seed`` too, and train them with the head and the block LayerNorms named by ``train_norms``
    (``ln2``: the second of every block, as the original; ``none``; ``all``). The global RNG is left as it
    was. Finally ``requires_grad`` is set on exactly the tensors the strategy trains.
    """
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("train_norms", train_norms, TRAIN_NORMS)
    _check_choice("insertion", insertion, INSERTIONS)
    _check_choice("parallel_form", parallel_form, PARALLEL_FORMS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if strategy in _REINITIALISED:
            reinitialise_backbone(model.backbone)
        if strategy in _PATCHED:
            add_patches(model.backbone, insertion=insertion, ratio=ratio, parallel_form=parallel_form)
    model.requires_grad_(strategy in ("fine_all", "scratch"))
    for tensor in _trained_tensors(model, strategy, train_norms):
        tensor.requires_grad_(True)
    trainable = count_parameters(model, trainable_only=True)
    return StrategyReport(strategy, trainable=trainable, total=count_parameters(model), stored=trainable)


def reinitialise_backbone(backbone: NextItNet) -> None:
    """Overwrite the backbone's weights with those a fresh ``NextItNet`` draws from the global RNG.

    Patches, if any, are left as they are.
    """
    fresh = NextItNet(
        backbone.num_items, backbone.channels, backbone.dilations, backbone.kernel_size, backbone.causal
    )
    load_base_state_dict(backbone, fresh.state_dict())


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors with ``requires_grad``, under their full state-dict names (what a patch file holds)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def frozen_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything else in ``model.state_dict()``: frozen parameters and buffers."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k not in trainable}


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {field} {value!r}; choose one of {', '.join(choices)}")


def _trained_tensors(model: TransferModel, strategy: str, train_norms: str) -> Iterator[nn.Parameter]:
    """The parameters a strategy trains besides "everything" (fine_all/scratch set that wholesale)."""
    yield from model.head.parameters()
    if model.cls_embedding is not None:
        yield model.cls_embedding
    blocks = list(_residual_blocks(model.backbone))
    if strategy in _PATCHED:
        yield from patch_parameters(model.backbone)
        norms = {"ln2": ("ln2",), "none": (), "all": ("ln1", "ln2")}[train_norms]
        for block in blocks:
            for name in norms:
                yield from getattr(block, name).parameters()
    elif strategy in ("fine_last1", "fine_last2"):
        last = blocks[-1]
        layers = ("conv2", "ln2") if strategy == "fine_last1" else ("conv1", "ln1", "conv2", "ln2")
        for name in layers:
            yield from getattr(last, name).parameters()


def _residual_blocks(backbone: NextItNet) -> Iterator[ResidualBlock]:
    """The backbone's residual blocks, looking through block-parallel patches that wrap them."""
    for block in backbone.blocks:
        yield block.block if isinstance(block, BlockParallelPatch) else block


__all__ = [
    "POOLINGS",
    "STRATEGIES",
    "TRAIN_NORMS",
    "StrategyReport",
    "TransferModel",
    "apply_strategy",
    "frozen_state_dict",
    "reinitialise_backbone",
    "trainable_state_dict",
]
