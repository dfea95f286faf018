"""Row 4: finetuning step time and optimiser-state bytes per strategy, with the analytic FLOP breakdown.

The head is profile-like: [CLS] appended, its hidden state -> ``ClassifierHead(C, K)`` -> cross entropy.
Autograd only computes what some trainable tensor needs, so the FLOPs split as follows (F = forward FLOPs
of the 16 convs over L+1 positions, P = those of the 16 serial patches, h = C/4):

| strategy | forward | input gradients | weight gradients |
|---|---|---|---|
| ``fine_all`` | F | F (down to the embedding) | F |
| ``peterrec`` | F + P | 15/16·F + P (down to the first patch) | P (+ LayerNorm affine, elementwise) |
| ``fine_cls`` | F | 0 (no backbone tensor needs a gradient) | head only |

With P = F·(2·C·h)/(k·C²) = F/6 at k = 3, h = C/4, peterrec needs (F + P + 15/16·F + P + P)/(3F) ≈ 0.81 of
fine_all's FLOPs; the Adam step over the frozen backbone disappears as well.

``lora`` (the ``adapter`` strategy with LoRA rank 8 on every conv) adds per conv ``x @ A_j.T`` for the k taps
and ``B`` (2·(k·r·C + r·C) FLOPs per position) to F, and its weight gradients are those of A and B only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from benchmarks.common import Sizes, conv_flops, interleaved_samples, medians, ratio_ci, spread
from peterrec import NUM_SPECIAL_TOKENS
from peterrec.model.backbone import NextItNet
from peterrec.model.heads import ClassifierHead
from peterrec.model.transfer import TransferModel, apply_strategy
from peterrec.training.trainer import dense_adam

PATCH_RATIO = 0.25
LORA_RANK = 8
# name -> (strategy, apply_strategy options)
VARIANTS = {
    "peterrec": ("peterrec", {"insertion": "serial", "ratio": PATCH_RATIO, "train_norms": "ln2"}),
    "lora": ("adapter", {"adapter": "lora", "rank": LORA_RANK}),
    "fine_all": ("fine_all", {}),
    "fine_cls": ("fine_cls", {}),
}
STRATEGIES = tuple(VARIANTS)


def flop_breakdown(sizes: Sizes, channels: int, strategy: str) -> dict[str, float]:
    """Analytic forward / input-gradient / weight-gradient FLOPs of one finetuning step (head ignored)."""
    num_convs = 2 * len(sizes.dilations)
    positions = sizes.length + 1  # [CLS] appended
    conv = conv_flops(sizes.batch, positions, channels, sizes.kernel_size, num_convs)
    hidden = int(channels * PATCH_RATIO)
    patch = num_convs * 2.0 * sizes.batch * positions * 2 * channels * hidden
    if strategy == "fine_all":
        return {"forward": conv, "input_grad": conv, "weight_grad": conv}
    if strategy == "peterrec":
        first_conv = conv / num_convs
        return {"forward": conv + patch, "input_grad": conv - first_conv + patch, "weight_grad": patch}
    if strategy == "lora":
        k, r = sizes.kernel_size, LORA_RANK
        lora = num_convs * 2.0 * sizes.batch * positions * (k * r * channels + r * channels)
        first_conv = conv / num_convs
        return {"forward": conv + lora, "input_grad": conv - first_conv + lora, "weight_grad": lora}
    return {"forward": conv, "input_grad": 0.0, "weight_grad": 0.0}


def adam_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of Adam's exp_avg and exp_avg_sq over every parameter it has stepped."""
    return sum(
        state[key].numel() * state[key].element_size()
        for state in optimizer.state.values()
        for key in ("exp_avg", "exp_avg_sq")
        if key in state
    )


class StrategyStep(NamedTuple):
    """One strategy's timed step, with what it trains and the activation bytes its backward keeps."""

    step: Callable[[], None]
    optimizer: torch.optim.Optimizer
    report: object
    saved_bytes: int


def _strategy_step(sizes: Sizes, channels: int, strategy: str) -> StrategyStep:
    torch.manual_seed(0)
    backbone = NextItNet(sizes.vocab, channels, sizes.dilations, sizes.kernel_size, causal=True)
    model = TransferModel(backbone, ClassifierHead(channels, sizes.finetune_classes))
    name, options = VARIANTS[strategy]
    report = apply_strategy(model, name, seed=0, **options)
    model.to(sizes.device)
    optimizer = dense_adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    high = sizes.vocab + NUM_SPECIAL_TOKENS
    seqs = torch.randint(NUM_SPECIAL_TOKENS, high, (sizes.batch, sizes.length), generator=generator)
    labels = torch.randint(0, sizes.finetune_classes, (sizes.batch,), generator=generator)
    seqs, labels = seqs.to(sizes.device), labels.to(sizes.device)

    def step() -> None:
        loss = F.cross_entropy(model(seqs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    saved = saved_activation_bytes(lambda: F.cross_entropy(model(seqs), labels))
    return StrategyStep(step, optimizer, report, saved)


def saved_activation_bytes(forward) -> int:
    """Bytes autograd keeps alive for the backward of ``forward()`` (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


def finetune_rows(sizes: Sizes) -> list[dict]:
    """Row 4 at every channel size, largest first (the acceptance criterion is at C=256)."""
    rows = []
    for channels in sorted(sizes.channels, reverse=True):
        built = {name: _strategy_step(sizes, channels, name) for name in STRATEGIES}
        steps = {name: b.step for name, b in built.items()}
        samples = interleaved_samples(steps, sizes.warmup, sizes.repeats, sizes.device)
        seconds = medians(samples)
        base_time = seconds["fine_all"]
        base_bytes = adam_state_bytes(built["fine_all"].optimizer)
        base_saved = built["fine_all"].saved_bytes
        base_flops = sum(flop_breakdown(sizes, channels, "fine_all").values())
        for name in STRATEGIES:
            _, optimizer, report, saved = built[name]
            state = adam_state_bytes(optimizer)
            flops = flop_breakdown(sizes, channels, name)
            low, high = ratio_ci(samples[name], samples["fine_all"])
            total = sum(flops.values())
            split = ", ".join(f"{key} {value / 1e9:.3f}" for key, value in flops.items())
            rows.append(
                {
                    "row": "4. finetune step",
                    "config": f"{name}, C={channels}, B×L={sizes.batch}×{sizes.length}",
                    "measure": "ms/step",
                    "value": round(seconds[name] * 1e3, 2),
                    "ratio": f"{seconds[name] / base_time:.2f}× fine_all time (95% CI {low:.2f}–{high:.2f})",
                    "note": f"{spread(samples[name])}; GFLOP {split}; "
                    f"analytic {total / base_flops:.2f}× fine_all",
                }
            )
            rows.append(
                {
                    "row": "4. saved activations",
                    "config": f"{name}, C={channels}, B×L={sizes.batch}×{sizes.length}",
                    "measure": "MB",
                    "value": round(saved / 1e6, 1),
                    "ratio": f"{saved / base_saved:.3f}× fine_all" if base_saved else "",
                    "note": "storages autograd keeps for backward (parameters included)",
                }
            )
            rows.append(
                {
                    "row": "4. optimiser state",
                    "config": f"{name}, C={channels}",
                    "measure": "Adam bytes",
                    "value": state,
                    "ratio": f"{state / base_bytes:.3f}× fine_all" if base_bytes else "",
                    "note": f"trainable {report.trainable:,} of {report.total:,} params",
                }
            )
    return rows
