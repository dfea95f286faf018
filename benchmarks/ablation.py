"""What each pretraining-step optimisation buys: ``python -m benchmarks.ablation [--channels 64,256]``.

Times one pretraining step (the row-1 step: full softmax on every position of a full 64×50 batch, backward,
optimiser step) with the optimisations switched on one at a time, cumulatively, interleaved in one process:

1. ``baseline``: the step as it was before the optimisations (kept here as reference code): each dilated
   conv is ``F.pad`` + k slices + ``torch.cat`` + ``F.linear`` under autograd, every block multiplies by
   the pad mask, and ``torch.optim.Adam`` runs its default per-tensor loop.
2. ``+conv backward``: ``DilatedConv1d``'s hand-written autograd function (one matmul for the input
   gradient and k - 1 shifted in-place additions, instead of autograd zero-filling a padded buffer and
   copying through every slice and the concatenation), still gathering its taps with a loop of slices.
3. ``+strided taps``: the taps gathered as one pad and one strided copy (fewer ops per conv).
4. ``+skip pad masks``: no mask multiplications (forward and backward) when a batch has no [PAD].
5. ``+fused Adam``: torch's fused single-kernel Adam step (what ``peterrec``'s trainer uses).

Reported: median and minimum step time of each variant and their ratio to the baseline. The shipped
code is variant 5; the earlier variants are monkeypatched in for the measurement only. The glibc allocator
setting (``peterrec.allocator``) is process-wide, so its effect is measured by running this script twice,
the second time with ``PETERREC_DEFAULT_MALLOC=1``; both print the page faults and system CPU time per step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics

import torch
import torch.nn.functional as F

import benchmarks.pretrain_rows as pretrain_rows
import peterrec.model.backbone as backbone
from benchmarks.common import Sizes, interleaved_samples, machine, markdown_table
from peterrec import PAD
from peterrec.allocator import tune_cpu_allocator

SHIPPED_GATHER = backbone.gather_taps
SHIPPED_FORWARD = backbone.DilatedConv1d.forward
SHIPPED_MASK = backbone.padding_mask
SHIPPED_ADAM = pretrain_rows.dense_adam


def autograd_conv_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The earlier DilatedConv1d.forward: zero padding, k slices, concatenation, one linear (autograd)."""
    span = (self.kernel_size - 1) * self.dilation
    padding = (span, 0) if self.causal else (span // 2, span // 2)
    padded = F.pad(x, (0, 0, *padding))
    length = x.shape[1]
    taps = [padded[:, j * self.dilation : j * self.dilation + length] for j in range(self.kernel_size)]
    return F.linear(torch.cat(taps, dim=-1), self.weight, self.bias)


def loop_gather_taps(x: torch.Tensor, shifts) -> torch.Tensor:
    """The first hand-written gather: one slice assignment (and zero fills) per tap."""
    batch, length, channels = x.shape
    taps = x.new_empty(batch, length, len(shifts), channels)
    for j, shift in enumerate(shifts):
        shift = max(-length, min(length, shift))
        dest = slice(shift, length) if shift >= 0 else slice(0, length + shift)
        source = slice(0, length - shift) if shift >= 0 else slice(-shift, length)
        taps[:, dest, j] = x[:, source]
        taps[:, : dest.start, j] = 0
        taps[:, dest.stop :, j] = 0
    return taps


def always_mask(seqs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The earlier padding mask: built and multiplied in even when nothing is padded."""
    return (seqs != PAD).unsqueeze(-1).to(dtype)


def loop_adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


# name -> (conv forward, gather, mask, adam); each row adds one optimisation to the row above.
VARIANTS = {
    "baseline": (autograd_conv_forward, SHIPPED_GATHER, always_mask, loop_adam),
    "+conv backward": (SHIPPED_FORWARD, loop_gather_taps, always_mask, loop_adam),
    "+strided taps": (SHIPPED_FORWARD, SHIPPED_GATHER, always_mask, loop_adam),
    "+skip pad masks": (SHIPPED_FORWARD, SHIPPED_GATHER, SHIPPED_MASK, loop_adam),
    "+fused Adam": (SHIPPED_FORWARD, SHIPPED_GATHER, SHIPPED_MASK, SHIPPED_ADAM),
}


def _install(forward, gather, mask) -> None:
    backbone.DilatedConv1d.forward = forward
    backbone.gather_taps = gather
    backbone.padding_mask = mask


def _variant_step(sizes: Sizes, channels: int, forward, gather, mask, adam):
    pretrain_rows.dense_adam = adam
    try:
        step = pretrain_rows.our_step(sizes, channels)
    finally:
        pretrain_rows.dense_adam = SHIPPED_ADAM

    def run() -> None:
        _install(forward, gather, mask)
        try:
            step()
        finally:
            _install(SHIPPED_FORWARD, SHIPPED_GATHER, SHIPPED_MASK)

    return run


def ablation_rows(sizes: Sizes) -> list[list[object]]:
    rows = []
    for channels in sizes.channels:
        steps = {name: _variant_step(sizes, channels, *parts) for name, parts in VARIANTS.items()}
        samples = interleaved_samples(steps, sizes.warmup, sizes.repeats, sizes.device)
        base_median = statistics.median(samples["baseline"])
        base_min = min(samples["baseline"])
        for name, values in samples.items():
            median = statistics.median(values)
            rows.append(
                [
                    f"C={channels}",
                    name,
                    f"{median * 1e3:.1f}",
                    f"{min(values) * 1e3:.1f}",
                    f"{median / base_median:.3f}",
                    f"{min(values) / base_min:.3f}",
                ]
            )
    return rows


def main() -> None:
    tuned = tune_cpu_allocator()  # as the peterrec command line does (PETERREC_DEFAULT_MALLOC=1: off)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="64,256")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = Sizes(channels=tuple(int(c) for c in args.channels.split(",")), repeats=args.repeats)
    header = ("size", "variant", "median ms", "min ms", "median / baseline", "min / baseline")
    before = resource.getrusage(resource.RUSAGE_SELF)
    rows = ablation_rows(sizes)
    after = resource.getrusage(resource.RUSAGE_SELF)
    steps = len(sizes.channels) * len(VARIANTS) * (sizes.warmup + sizes.repeats)
    info = dict(machine(), glibc_malloc_tuned=tuned)
    print(json.dumps(info))
    print(markdown_table(header, rows))
    print(
        f"\nper step, all variants: {(after.ru_minflt - before.ru_minflt) / steps:.0f} minor page faults, "
        f"{(after.ru_stime - before.ru_stime) / steps * 1e3:.1f} ms system CPU time"
    )


if __name__ == "__main__":
    main()
