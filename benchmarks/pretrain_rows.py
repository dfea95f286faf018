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

from benchmarks.common import Sizes, interleaved, matmul_peak, pretrain_step_flops
from peterrec import NUM_SPECIAL_TOKENS
from peterrec.backbone import NextItNet
from peterrec.objectives import ItemOutput, autoregressive_batch, full_softmax_loss


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
    return autoregressive_batch(seqs)


def our_step(sizes: Sizes, channels: int, bf16: bool = False) -> Callable[[], None]:
    """One pretraining step of our NextItNet + ItemOutput (full softmax on every position)."""
    torch.manual_seed(0)
    backbone = NextItNet(sizes.vocab, channels, sizes.dilations, sizes.kernel_size, causal=True)
    output = ItemOutput(sizes.vocab, channels)
    optimizer = torch.optim.Adam([*backbone.parameters(), *output.parameters()], lr=1e-3)
    inputs, targets = _batch(sizes)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = full_softmax_loss(output, backbone(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def recbole_step(block_cls, sizes: Sizes, channels: int) -> Callable[[], None]:
    """One pretraining step of RecBole's residual stack with the identical embedding, output and loss."""
    torch.manual_seed(0)
    model = RecBoleStack(block_cls, sizes.vocab, channels, sizes.dilations, sizes.kernel_size)
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


def pretrain_rows(sizes: Sizes) -> list[dict]:
    """Rows 1-3: tokens/s (ours fp32, ours bf16, RecBole fp32), GFLOP/s and share of the matmul peaks."""
    peaks = {
        "fp32": matmul_peak(sizes.matmul_n, torch.float32),
        "bf16": matmul_peak(sizes.matmul_n, torch.bfloat16),
    }
    rows = [
        {
            "row": "3. matmul peak",
            "config": f"{sizes.matmul_n}² {dtype}",
            "measure": "GFLOP/s",
            "value": round(gflops, 1),
            "ratio": "",
            "note": "torch.mm, median",
        }
        for dtype, gflops in peaks.items()
    ]
    block_cls, why_not = import_recbole_block()
    tokens = sizes.batch * sizes.length
    for channels in sizes.channels:
        steps = {"ours fp32": our_step(sizes, channels), "ours bf16": our_step(sizes, channels, bf16=True)}
        if block_cls is not None:
            steps["RecBole fp32"] = recbole_step(block_cls, sizes, channels)
        seconds = interleaved(steps, sizes.warmup, sizes.repeats)
        flops = pretrain_step_flops(sizes, channels)
        shape = f"C={channels}, B×L={sizes.batch}×{sizes.length}, V={sizes.vocab}"
        base = seconds.get("RecBole fp32")
        for name, secs in seconds.items():
            dtype = name.split()[-1]
            ratio = f"{base / secs:.2f}× RecBole" if base and name != "RecBole fp32" else ""
            if name == "ours bf16":
                ratio += f"; {seconds['ours fp32'] / secs:.2f}× ours fp32"
            rows.append(
                {
                    "row": "1-2. pretrain step",
                    "config": f"{name}, {shape}",
                    "measure": "tokens/s",
                    "value": round(tokens / secs, 1),
                    "ratio": ratio.lstrip("; "),
                    "note": f"{secs * 1e3:.2f} ms/step",
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
        if block_cls is None:
            rows.append(
                {
                    "row": "1. pretrain step",
                    "config": f"RecBole fp32, C={channels}",
                    "measure": "tokens/s",
                    "value": "skipped",
                    "ratio": "",
                    "note": f"RecBole not importable ({why_not}); run benchmarks/setup_recbole.sh",
                }
            )
    return rows
