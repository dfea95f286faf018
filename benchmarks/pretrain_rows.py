"""Rows 1-3: pretraining step throughput, ours (fp32, bf16) vs RecBole's residual stack, and the CPU peak.

Both models do the same work per step: item embedding -> 8 residual blocks (16 dilated convs C -> C, kernel 3,
dilations 1, 2, 4, 8 four times) -> an untied ``Linear(C, V)`` softmax on every position -> cross entropy ->
backward -> Adam. The only difference is the residual stack: ours (channels-last, one matmul over the shifted
taps, pad positions zeroed) against RecBole 1.2.1's ``ResidualBlock_b`` (``Conv2d`` of kernel (1, k) with
permutes and ``ZeroPad2d`` around every conv), imported from RecBole itself.

Dilations: RecBole's ``dilations`` config entry is per *block*, repeated ``block_num`` times, and each
``ResidualBlock_b(dilation=d)`` uses d in its first conv and 2d in its second, exactly like our
``ResidualBlock``. So RecBole ``dilations: [1, 4], block_num: 4`` is our ``dilations=(1, 4) * 4``: convs with
dilation 1, 2, 4, 8, repeated four times (RecBole's shipped default is ``block_num: 5``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    Sizes,
    interleaved_samples,
    matmul_peak,
    medians,
    pretrain_step_flops,
    ratio_ci,
    spread,
)
from peterrec import NUM_SPECIAL_TOKENS
from peterrec.model.backbone import NextItNet
from peterrec.model.item_encoder import ItemOutput
from peterrec.training.objectives import autoregressive_batch, full_softmax_loss
from peterrec.training.trainer import dense_adam


def import_recbole_block():
    """RecBole's ``ResidualBlock_b``, or None (with the reason) when RecBole cannot be imported here."""
    try:
        from benchmarks.recbole_shims import import_residual_block

        return import_residual_block(), ""
    except Exception as error:  # noqa: BLE001 - any import failure means "row skipped", with the reason
        return None, f"{type(error).__name__}: {error}"


class RecBoleStack(nn.Module):
    """RecBole's NextItNet residual stack with the same embedding and full-softmax output as ours."""

    def __init__(self, block_cls, vocab: int, channels: int, dilations, kernel_size: int):
        super().__init__()
        self.item_embedding = nn.Embedding(vocab + NUM_SPECIAL_TOKENS, channels, padding_idx=0)
        self.residual_blocks = nn.Sequential(
            *(block_cls(channels, channels, kernel_size=kernel_size, dilation=d) for d in dilations)
        )
        self.output = nn.Linear(channels, vocab)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.output(self.residual_blocks(self.item_embedding(inputs)))


def _batch(sizes: Sizes) -> tuple[torch.Tensor, torch.Tensor]:
    # Full-length sequences (no [PAD]) so both models compute the loss on exactly the same B·L positions.
    generator = torch.Generator().manual_seed(0)
    high = sizes.vocab + NUM_SPECIAL_TOKENS
    seqs = torch.randint(NUM_SPECIAL_TOKENS, high, (sizes.batch, sizes.length + 1), generator=generator)
    inputs, targets = autoregressive_batch(seqs)
    return inputs.to(sizes.device), targets.to(sizes.device)


def our_step(sizes: Sizes, channels: int, bf16: bool = False) -> Callable[[], None]:
    """One pretraining step as ``peterrec pretrain`` takes it: NextItNet + ItemOutput, full softmax on
    every position, the trainer's Adam (fused where torch has it)."""
    torch.manual_seed(0)
    backbone = NextItNet(sizes.vocab, channels, sizes.dilations, sizes.kernel_size, causal=True)
    output = ItemOutput(sizes.vocab, channels)
    backbone.to(sizes.device)
    output.to(sizes.device)
    optimizer = dense_adam([*backbone.parameters(), *output.parameters()], lr=1e-3)
    inputs, targets = _batch(sizes)
    device_type = torch.device(sizes.device).type

    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = full_softmax_loss(output, backbone(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def recbole_step(block_cls, sizes: Sizes, channels: int) -> Callable[[], None]:
    """One pretraining step of RecBole's residual stack with the identical embedding, output and loss,
    stepped by ``torch.optim.Adam`` with its defaults, as RecBole's trainer does."""
    torch.manual_seed(0)
    model = RecBoleStack(block_cls, sizes.vocab, channels, sizes.dilations, sizes.kernel_size)
    model.to(sizes.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, targets = _batch(sizes)
    columns = (targets - NUM_SPECIAL_TOKENS).reshape(-1)

    def step() -> None:
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, sizes.vocab), columns)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _skipped(config: str, why: str) -> dict:
    return {
        "row": "1-2. pretrain step",
        "config": config,
        "measure": "tokens/s",
        "value": "skipped",
        "ratio": "",
        "note": why,
    }


PROBE_N = 512


def bf16_peak(sizes: Sizes) -> tuple[float, int, bool]:
    """(GFLOP/s, matrix size, native) of the bf16 matmul peak.

    bf16 is native here always on CUDA, and on a CPU when a 512² bf16 matmul is at least half as fast as
    fp32 (emulation is hundreds of times slower, AVX512-BF16 and AMX several times faster). Emulated bf16
    runs a 2048² matmul for about a minute, so the probe's figure then stands in for the peak.
    """
    if sizes.device.startswith("cuda"):
        return matmul_peak(sizes.matmul_n, torch.bfloat16, sizes.device), sizes.matmul_n, True
    probe_fp32 = matmul_peak(PROBE_N, torch.float32, sizes.device, warmup=1, repeats=3)
    probe_bf16 = matmul_peak(PROBE_N, torch.bfloat16, sizes.device, warmup=1, repeats=3)
    if probe_bf16 < 0.5 * probe_fp32:
        return probe_bf16, PROBE_N, False
    return matmul_peak(sizes.matmul_n, torch.bfloat16, sizes.device), sizes.matmul_n, True


def pretrain_rows(sizes: Sizes) -> list[dict]:
    """Rows 1-3: tokens/s (ours fp32, ours bf16, RecBole fp32), GFLOP/s and share of the matmul peaks.

    bf16 is timed only where bf16 matmuls run in hardware (:func:`bf16_peak`): a CPU without AVX512-BF16
    or AMX emulates them hundreds of times slower, and timing that would measure the emulation, not the model.
    The skipped row says so, with both peaks.
    """
    peaks = {"fp32": matmul_peak(sizes.matmul_n, torch.float32, sizes.device)}
    peaks["bf16"], bf16_n, native_bf16 = bf16_peak(sizes)
    rows = [
        {
            "row": "3. matmul peak",
            "config": f"{sizes.matmul_n if dtype == 'fp32' else bf16_n}² {dtype}",
            "measure": "GFLOP/s",
            "value": round(gflops, 1),
            "ratio": "",
            "note": "torch.mm, median" + ("" if native_bf16 or dtype == "fp32" else "; no native bf16 here"),
        }
        for dtype, gflops in peaks.items()
    ]
    block_cls, why_not = import_recbole_block()
    tokens = sizes.batch * sizes.length
    for channels in sizes.channels:
        shape = f"C={channels}, B×L={sizes.batch}×{sizes.length}, V={sizes.vocab}"
        steps = {"ours fp32": our_step(sizes, channels)}
        if native_bf16:
            steps["ours bf16"] = our_step(sizes, channels, bf16=True)
        if block_cls is not None:
            steps["RecBole fp32"] = recbole_step(block_cls, sizes, channels)
        samples = interleaved_samples(steps, sizes.warmup, sizes.repeats, sizes.device)
        seconds = medians(samples)
        flops = pretrain_step_flops(sizes, channels)
        base = seconds.get("RecBole fp32")
        for name, secs in seconds.items():
            dtype = name.split()[-1]
            ratio = ""
            if base and name != "RecBole fp32":
                low, high = ratio_ci(samples["RecBole fp32"], samples[name])
                ratio = f"{base / secs:.2f}× RecBole (95% CI {low:.2f}–{high:.2f})"
            if name == "ours bf16":
                ratio += f"; {seconds['ours fp32'] / secs:.2f}× ours fp32"
            rows.append(
                {
                    "row": "1-2. pretrain step",
                    "config": f"{name}, {shape}",
                    "measure": "tokens/s",
                    "value": round(tokens / secs, 1),
                    "ratio": ratio.lstrip("; "),
                    "note": spread(samples[name]),
                }
            )
            achieved = flops / secs / 1e9
            rows.append(
                {
                    "row": "3. achieved",
                    "config": f"{name}, C={channels}",
                    "measure": "GFLOP/s",
                    "value": round(achieved, 2),
                    "ratio": f"{achieved / peaks[dtype]:.1%} of {dtype} peak",
                    "note": f"{flops / 1e9:.3f} GFLOP/step (analytic, fwd×3)",
                }
            )
        if not native_bf16:
            why = (
                f"bf16 matmul {peaks['bf16']:.1f} GFLOP/s < fp32 {peaks['fp32']:.1f}: this CPU has no native "
                "bf16 (AVX512-BF16/AMX), timing it would measure the emulation"
            )
            rows.append(_skipped(f"ours bf16, {shape}", why))
        if block_cls is None:
            why = f"RecBole not importable ({why_not}); run benchmarks/setup_recbole.sh"
            rows.append(_skipped(f"RecBole fp32, {shape}", why))
    return rows
