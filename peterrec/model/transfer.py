"""Transfer a pretrained NextItNet to a downstream task: the model, and what each strategy trains.

:class:`TransferModel` is a backbone plus a task head on a user representation (B, C).
:func:`apply_strategy` prepares it in place for one transfer strategy (adapters, re-initialisation,
``requires_grad``) and returns a :class:`StrategyReport` with exact parameter counts. What each strategy
does is one row of :data:`STRATEGY_PLANS`:

| strategy     | trained                                               | backbone                   |
|--------------|-------------------------------------------------------|----------------------------|
| ``peterrec``   | adapter (patches) + head + LayerNorms per ``train_norms`` | pretrained, frozen     |
|                | (+ a low-rank item-table offset with ``item_rank``)   |                            |
| ``fine_all``   | everything                                          | pretrained                 |
| ``fine_cls``   | head                                                | pretrained, frozen         |
| ``fine_last1`` | last block's conv2 and ln2 + head                   | pretrained, rest frozen    |
| ``fine_last2`` | last block's conv1, conv2, ln1, ln2 + head          | pretrained, rest frozen    |
| ``peter_zero`` | as ``peterrec``                                     | random (seeded), frozen    |
| ``scratch``    | everything                                          | random (seeded)            |
| ``adapter``    | the configured adapter kind + head (no LayerNorms)  | pretrained, frozen         |

A trainable [CLS] embedding (``train_cls=True``), the layer mix (``layer_mix=True``) and the length exponent
(``length_scale=True``) are trained by every strategy. ``item_scale="init"`` rescales the frozen pretrained
ID item table of ``peterrec`` and ``adapter`` to the initialiser's standard deviation
(:func:`rescale_item_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peterrec.choices import (
    STRATEGIES,
    AdapterModules,
    ItemScale,
    Pooling,
    Strategy,
    TrainNorms,
    check_choice,
)
from peterrec.model.adapters import adapter_options, adapters_of, add_adapters, load_base_state_dict
from peterrec.model.adapters.base import Layers
from peterrec.model.backbone import NextItNet, count_parameters
from peterrec.model.init import TRUNCATED_INIT_STD
from peterrec.tokens import CLS, MASK, NUM_SPECIAL_TOKENS, PAD


@dataclass(frozen=True)
class StrategyPlan:
    """What a strategy does to a backbone."""

    pretrained: bool  # False: the backbone is re-initialised (seeded) first
    train_backbone: bool  # every backbone tensor trains
    adapted: bool  # the configured adapter trains
    unfreeze_last: tuple[str, ...] = ()  # layers of the last residual block that train
    norms: bool = True  # with ``adapted``: the LayerNorms of ``train_norms`` train too


STRATEGY_PLANS: dict[str, StrategyPlan] = {
    "peterrec": StrategyPlan(pretrained=True, train_backbone=False, adapted=True),
    "fine_all": StrategyPlan(pretrained=True, train_backbone=True, adapted=False),
    "fine_cls": StrategyPlan(pretrained=True, train_backbone=False, adapted=False),
    "fine_last1": StrategyPlan(True, False, False, unfreeze_last=("conv2", "ln2")),
    "fine_last2": StrategyPlan(True, False, False, unfreeze_last=("conv1", "ln1", "conv2", "ln2")),
    "peter_zero": StrategyPlan(pretrained=False, train_backbone=False, adapted=True),
    "scratch": StrategyPlan(pretrained=False, train_backbone=True, adapted=False),
    "adapter": StrategyPlan(pretrained=True, train_backbone=False, adapted=True, norms=False),
}
assert tuple(STRATEGY_PLANS) == STRATEGIES, "every strategy needs exactly one plan"

NORMS_TRAINED: dict[str, tuple[str, ...]] = {"ln2": ("ln2",), "none": (), "all": ("ln1", "ln2")}

# length_scale: clicks are counted relative to this many. Any constant gives the same family of models (the
# head's weights absorb a constant factor); it only keeps the factor near 1 for a typical history at init.
LENGTH_REFERENCE = 64


class TransferModel(nn.Module):
    """A (pretrained) backbone and a task head: ``model(seqs)`` is ``head(user_representation(seqs))``.

    ``pooling`` says how hidden states (B, L, C) become one vector per user:

    - ``cls_end``: append [CLS] to each left-padded sequence and read that last position (for a causal
      backbone the only position that has seen the whole sequence).
    - ``first_last``: mean of the hidden states at the first and the last real positions (non-causal only).
    - ``mean``: mean over real positions, [PAD] excluded. Valid for a causal backbone too: position t then
      summarises the prefix up to t, and the mean weighs every prefix alike.
    - ``next_item``: the backbone's next-item read-out, as pretraining scores the next item (causal: the
      last position; non-causal: an appended [MASK]). With a content item encoder and its cold-start head
      the untrained model is then exactly the zero-shot scorer, and finetuning starts from it.
    - ``auto``: ``cls_end``.

    The [CLS] vector is the item encoder's [CLS] row. With ``train_cls=True`` the model owns a separate
    parameter ``cls_embedding`` (C,), initialised from that row and handed to the item encoder in its
    place, so the backbone's row is never changed by training [CLS].

    ``layer_mix=True`` pools every layer, not only the top one: the item vectors and each residual block's
    output are pooled alike, each pooled vector is standardised (a LayerNorm without parameters: the layers
    differ in scale by orders of magnitude) and the user vector is their weighted sum, the weights a softmax
    of ``layer_weights`` (one per layer, zeros at init: the plain average). Trained by every strategy, like
    the head: it lets a frozen backbone's task choose how much item identity (the bottom layer) and how
    much sequence context (the top) it reads. An ELMo-style scalar mix.

    ``length_scale=True`` multiplies the user vector by ``(n / 64) ** a``, ``n`` the user's clicks (all
    windows together) and ``a`` the trainable ``length_exponent``, 0.5 at init. Pooling by the mean (and
    the layer mix's standardising) leaves a 20-click and a 700-click user with vectors of the same size, so
    a linear head gives both logits of the same range although the longer history is much more evidence.
    Logistic regression on an L2-normalised bag of items scales its logits as ``sqrt(n)`` times the mean
    item weight, hence 0.5 (TensorFlow's ``sqrtn`` combiner); training may move it (on ML-100K profiles it
    stayed within 0.43-0.53). The head's bias, the prior, is not scaled.
    """

    def __init__(
        self,
        backbone: NextItNet,
        head: nn.Module,
        pooling: Pooling = "auto",
        train_cls: bool = False,
        layer_mix: bool = False,
        length_scale: bool = False,
    ):
        super().__init__()
        check_choice("pooling", pooling, Pooling)
        if backbone.causal and pooling == "first_last":
            raise ValueError(
                "pooling 'first_last' needs a non-causal backbone (a causal model's first position has seen "
                "one item only); use 'cls_end' or 'mean' with a causal backbone"
            )
        self.backbone = backbone
        self.head = head
        self.pooling = "cls_end" if pooling == "auto" else pooling
        self.cls_embedding: nn.Parameter | None = None
        if train_cls:
            self.cls_embedding = nn.Parameter(backbone.item_encoder.cls_row())
        self.layer_weights: nn.Parameter | None = None
        if layer_mix:
            self.layer_weights = nn.Parameter(torch.zeros(len(backbone.blocks) + 1))
        self.length_exponent: nn.Parameter | None = None
        if length_scale:
            self.length_exponent = nn.Parameter(torch.tensor(0.5))

    def own_parameters(self) -> dict[str, nn.Parameter]:
        """The model's own trainable tensors outside the backbone and head, by name: a trainable [CLS], the
        layer mix, the length exponent (those configured)."""
        names = ("cls_embedding", "layer_weights", "length_exponent")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Head outputs for left-padded item sequences (B, L), e.g. class logits or item scores."""
        return self.head(self.user_representation(seqs))

    def user_representation(self, seqs: torch.Tensor) -> torch.Tensor:
        """One vector (B, C) per left-padded sequence (B, L), pooled as ``self.pooling`` says.

        A whole history given as windows (B, W, L) is read window by window (each with its own [CLS] under
        ``cls_end``) and the vectors of the windows that hold an item are averaged. With ``length_scale``
        the vector is then scaled by the user's number of clicks.
        """
        vectors = self._pooled(seqs)
        if self.length_exponent is None:
            return vectors
        clicks = (seqs != PAD).flatten(1).sum(dim=1).clamp(min=1).to(vectors.dtype)
        return vectors * (clicks / LENGTH_REFERENCE).pow(self.length_exponent.to(vectors.dtype)).unsqueeze(1)

    def _pooled(self, seqs: torch.Tensor) -> torch.Tensor:
        """:meth:`user_representation` before the length scale."""
        if seqs.dim() == 3:
            return self._windows_representation(seqs)
        appended = {"cls_end": CLS, "next_item": None if self.backbone.causal else MASK}.get(self.pooling)
        if appended is not None:
            token = torch.full((len(seqs), 1), appended, dtype=seqs.dtype, device=seqs.device)
            # Appending on the right keeps the padding on the left, where the backbone expects it.
            seqs = torch.cat([seqs, token], dim=1)
        if self.layer_weights is None:
            return self._pool(self.backbone(seqs, self.cls_embedding), seqs)
        states = self.backbone.layer_states(seqs, self.cls_embedding)
        pooled = torch.stack([self._pool(state, seqs) for state in states], dim=1)  # (B, layers, C)
        pooled = F.layer_norm(pooled, pooled.shape[-1:])
        weights = torch.softmax(self.layer_weights, dim=0).to(pooled.dtype)
        return torch.einsum("blc,l->bc", pooled, weights)

    def _pool(self, hidden: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L, C) hidden states of ``seqs`` -> (B, C) as ``self.pooling`` says."""
        if self.pooling in ("cls_end", "next_item"):
            return hidden[:, -1]
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

    def _windows_representation(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, W, L) windows -> (B, C): the mean vector of each user's windows that hold an item.

        Only those windows go through the backbone (most users fill few of the W slots); a user with none
        gets a zero vector.
        """
        batch, windows, length = seqs.shape
        flat = seqs.reshape(batch * windows, length)
        used = (flat != PAD).any(dim=1)
        owner = torch.arange(batch, device=seqs.device).repeat_interleave(windows)[used]
        vectors = self._pooled(flat[used] if used.any() else flat[:1])[: len(owner)]
        sums = vectors.new_zeros(batch, vectors.shape[1]).index_add(0, owner, vectors)
        counts = torch.bincount(owner, minlength=batch).clamp(min=1).unsqueeze(1)
        return sums / counts.to(sums.dtype)

    def extra_repr(self) -> str:
        return (
            f"pooling={self.pooling!r}, train_cls={self.cls_embedding is not None}, "
            f"layer_mix={self.layer_weights is not None}, length_scale={self.length_exponent is not None}"
        )


@dataclass
class StrategyReport:
    """Exact parameter counts after :func:`apply_strategy`.

    ``stored`` counts what a patch file for this strategy must hold: every tensor with ``requires_grad``.
    (``peter_zero``'s frozen random backbone is not stored; it is rebuilt from the strategy's ``seed``.)
    ``adapters`` lists the adapters added, as recorded specs (kind, layers, options).
    """

    strategy: str
    trainable: int
    total: int
    stored: int
    adapters: list[dict] = field(default_factory=list)
    head: int = 0  # trainable parameters of the head (and a trainable [CLS], the layer mix); the rest adapt
    # the backbone

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
    strategy: Strategy,
    *,
    adapter: str = "bottleneck",
    layers: Layers = "all",
    train_norms: TrainNorms = "ln2",
    seed: int = 0,
    modules: AdapterModules = "backbone",
    item_rank: int = 0,
    item_scale: ItemScale = "keep",
    **adapter_opts: Any,
) -> StrategyReport:
    """Prepare ``model`` in place for one transfer strategy and report its parameter counts.

    ``peter_zero`` and ``scratch`` first re-initialise the backbone exactly as ``torch.manual_seed(seed)``
    followed by a fresh ``NextItNet`` would. ``peterrec`` and ``peter_zero`` then add the ``adapter`` kind
    (default ``bottleneck``, PeterRec's patches; its options, e.g. ``insertion``, ``ratio``,
    ``parallel_form``, as keywords) on ``layers``, drawn from ``seed`` too, and train it with the head and
    the block LayerNorms named by ``train_norms`` (``ln2``: the second of every block, as the original;
    ``none``; ``all``). ``modules`` puts the adapter into the backbone (default), a content item encoder
    (``item_encoder``) or ``both``. ``item_rank`` r > 0 adds to the adapted strategies a rank-r offset of the
    input item table (``item_lora``), drawn after the adapter. ``item_scale="init"`` first rescales the
    pretrained item table of the strategies that patch a pretrained frozen backbone
    (:func:`item_scale_applies`). The global RNG is left as it was. Finally
    ``requires_grad`` is set on exactly the tensors the strategy trains: the adapters' declared names, the
    head and a trainable [CLS].
    """
    check_choice("strategy", strategy, Strategy)
    check_choice("train_norms", train_norms, TrainNorms)
    check_choice("item_scale", item_scale, ItemScale)
    options = adapter_options(adapter, adapter_opts)  # checked even when the strategy adds no adapter
    plan = STRATEGY_PLANS[strategy]
    if item_scale == "init" and item_scale_applies(strategy):
        rescale_item_table(model.backbone)  # before the item patch, whose scale follows the table's
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if not plan.pretrained:
            reinitialise_backbone(model.backbone)
        if plan.adapted:
            add_adapters(model, adapter, layers=layers, modules=modules, **vars(options))
            if plan.norms and NORMS_TRAINED[train_norms]:
                add_adapters(model, "unfreeze", parts=NORMS_TRAINED[train_norms])
            if item_rank:
                add_adapters(model, "item_lora", rank=item_rank)
        if plan.unfreeze_last:
            add_adapters(model, "unfreeze", layers=[-1], parts=plan.unfreeze_last)
    model.requires_grad_(plan.train_backbone)
    for tensor in _declared_trainable(model):
        tensor.requires_grad_(True)
    trainable = count_parameters(model, trainable_only=True)
    head = count_parameters(model.head, trainable_only=True)
    head += sum(p.numel() for p in model.own_parameters().values())
    return StrategyReport(
        strategy,
        trainable=trainable,
        total=count_parameters(model),
        stored=trainable,
        adapters=[a.spec() for a in adapters_of(model)],
        head=head,
    )


def _declared_trainable(model: TransferModel) -> list[nn.Parameter]:
    """The head, the model's own tensors (:meth:`TransferModel.own_parameters`) and every tensor an adapter
    declared."""
    tensors = list(model.head.parameters()) + list(model.own_parameters().values())
    for adapter in adapters_of(model):
        tensors += [model.backbone.get_parameter(name) for name in adapter.trainable_names]
    return tensors


def item_scale_applies(strategy: str) -> bool:
    """Whether ``item_scale`` acts on ``strategy``: one that patches a pretrained, frozen backbone."""
    plan = STRATEGY_PLANS[strategy]
    return plan.pretrained and plan.adapted and not plan.train_backbone


def item_rank_applies(strategy: str) -> bool:
    """Whether ``item_rank`` acts on ``strategy``: one that trains the configured adapter (the item offset is
    added beside it)."""
    return STRATEGY_PLANS[strategy].adapted


def rescale_item_table(backbone: NextItNet) -> float:
    """Multiply the ID item table by one factor, so that its real items get the initialiser's std.

    Next-item pretraining leaves the table about twice as spread as it was drawn (ML-100K: 0.034 vs 0.0176).
    On gender, the frozen backbone under the same patches reads users better with the table shrunk back
    (validation log loss 0.5295 vs 0.5365 over 3 seeds; docs/results.md). Returns the factor applied.
    """
    embedding = getattr(backbone.item_encoder, "embedding", None)
    if not isinstance(embedding, nn.Embedding):
        raise ValueError("item_scale: init rescales an ID item table; this backbone reads items' content")
    with torch.no_grad():
        spread = float(embedding.weight[NUM_SPECIAL_TOKENS:].float().std())
        if spread <= 0.0:
            raise ValueError("item_scale: init needs an item table with spread; this one is constant")
        factor = TRUNCATED_INIT_STD / spread
        embedding.weight.mul_(factor)
    return factor


def reinitialise_backbone(backbone: NextItNet) -> None:
    """Overwrite the backbone's weights with those a fresh ``NextItNet`` draws from the global RNG.

    Adapters, if any, are left as they are.
    """
    load_base_state_dict(backbone, backbone.fresh().state_dict())


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors with ``requires_grad``, under their full state-dict names (what a patch file holds)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def frozen_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything else in ``model.state_dict()``: frozen parameters and buffers."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k not in trainable}


__all__ = [
    "STRATEGY_PLANS",
    "StrategyPlan",
    "StrategyReport",
    "TransferModel",
    "apply_strategy",
    "frozen_state_dict",
    "item_rank_applies",
    "item_scale_applies",
    "reinitialise_backbone",
    "rescale_item_table",
    "trainable_state_dict",
]
