"""This checkout's pretraining step against an earlier commit's, timed in alternating child processes.

``python -m benchmarks.paired_step --base ../before [--rounds 8] [--batch 32] [--precision auto]`` times the
ML-100K-sized pretraining step (NextItNet C=64, dilations [1, 4] x 4, full softmax over 1,682 items, the
trainer's fused Adam) as each side's own code builds it: ``before`` imports ``peterrec`` from ``--base``
(``PYTHONPATH``), ``after`` from this folder. The two sides alternate (before, after, before, ...) so a
machine whose speed drifts affects both alike; each child warms up, then reports the median of its timed
steps. The ratio of each adjacent pair is one sample; the result is their median with a bootstrap 95% CI.

``--precision``: ``fp32`` for both sides, or ``auto`` for this side (bf16 autocast where the hardware has it,
as the shipped ML-100K configs) against ``fp32`` for the earlier commit (which had no ``auto``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time, torch
from peterrec.allocator import tune_cpu_allocator
from peterrec.model.backbone import NextItNet
from peterrec.model.item_encoder import ItemOutput
from peterrec.training.objectives import full_softmax_loss
tune_cpu_allocator()
batch, repeats, bf16 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "bf16"
torch.manual_seed(0)
backbone = NextItNet(1682, 64, (1, 4) * 4, 3, True)
output = ItemOutput(1682, 64)
params = [*backbone.parameters(), *output.parameters()]
optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
seqs = torch.randint(4, 1686, (batch, 51))
inputs, targets = seqs[:, :-1], seqs[:, 1:]

def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = full_softmax_loss(output, backbone(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

for _ in range(5):
    step()
times = []
for _ in range(repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps({"median_s": sorted(times)[len(times) // 2]}))
"""


def time_side(base: Path | None, batch: int, repeats: int, precision: str) -> float:
    env = dict(os.environ)
    if base is not None:
        env["PYTHONPATH"] = str(base.resolve())
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(batch), str(repeats), precision],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["median_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", choices=["fp32", "auto"], default="fp32")
    args = parser.parse_args()
    import torch

    from peterrec.runtime import resolve_precision

    ours = resolve_precision(args.precision, torch.device("cpu"))
    before, after = [], []
    for _ in range(args.rounds):
        before.append(time_side(args.base, args.batch, args.repeats, "fp32"))
        after.append(time_side(None, args.batch, args.repeats, ours))
    ratios = np.array(before) / np.array(after)
    rng = np.random.default_rng(0)
    draws = np.median(rng.choice(ratios, size=(2000, len(ratios))), axis=1)
    tokens = args.batch * 50
    result = {
        "batch": args.batch,
        "precision_after": ours,
        "before_ms": round(1000 * float(np.median(before)), 2),
        "after_ms": round(1000 * float(np.median(after)), 2),
        "before_tokens_per_s": round(tokens / float(np.median(before)), 1),
        "after_tokens_per_s": round(tokens / float(np.median(after)), 1),
        "speedup_median": round(float(np.median(ratios)), 3),
        "speedup_ci95": [round(float(np.quantile(draws, q)), 3) for q in (0.025, 0.975)],
        "speedup_rounds": [round(float(r), 3) for r in ratios],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
