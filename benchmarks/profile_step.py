"""Where one pretraining step spends its time: ``python -m benchmarks.profile_step [--channels 256]``.

Runs a few warm-up steps, then profiles ``--steps`` steps (forward + backward + Adam) with ``torch.profiler``
and prints the top operators by self CPU time. ``--recbole`` profiles RecBole's residual stack instead (from
benchmarks/.venv), ``--bf16`` our step under CPU bfloat16 autocast.
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from benchmarks.common import Sizes
from benchmarks.pretrain_rows import import_recbole_block, our_step, recbole_step
from peterrec.allocator import tune_cpu_allocator


def main() -> None:
    tune_cpu_allocator()  # as the peterrec command line does, for both sides of every comparison
    parser = argparse.ArgumentParser(description="profile one pretraining step")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=1682)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25, help="how many operators to print")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--recbole", action="store_true")
    args = parser.parse_args()
    sizes = Sizes(batch=args.batch, length=args.length, vocab=args.vocab)
    if args.recbole:
        block_cls, why_not = import_recbole_block()
        if block_cls is None:
            raise SystemExit(f"RecBole not importable ({why_not}); run benchmarks/setup_recbole.sh")
        step = recbole_step(block_cls, sizes, args.channels)
    else:
        step = our_step(sizes, args.channels, bf16=args.bf16)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
