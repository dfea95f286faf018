"""``python -m benchmarks.run [--quick] [--only ROWS] [--out benchmarks/results]``: print one markdown table.

Rows (docs/performance.md describes each): 1-3 ``pretrain`` (tokens/s ours fp32 / bf16 vs RecBole, GFLOP/s and
share of the matmul peaks), 4 ``finetune`` (step time and Adam bytes per strategy), 5 ``eval`` (full-ranking
users/s), 6 ``large`` (1M-item sampled-softmax pretraining in a subprocess: step time, peak memory).
Ratios are always between measurements taken in this same process, interleaved.

RecBole is imported from ``benchmarks/.venv`` (``bash benchmarks/setup_recbole.sh``): when the current Python
cannot import it and that venv exists, the script re-runs itself with the venv's Python.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import Sizes, machine, markdown_table
from peterrec.allocator import tune_cpu_allocator

ROW_GROUPS = ("pretrain", "finetune", "eval", "large")
VENV_PYTHON = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
HEADER = ("row", "configuration", "measure", "value", "ratio", "note")
MEMORY_LIMIT_GIB = 24.0


def _reexec_in_venv() -> None:
    """Re-run under benchmarks/.venv when RecBole is only importable there."""
    if importlib.util.find_spec("recbole") is not None or os.environ.get("PETERREC_BENCH_REEXEC"):
        return
    # Compare prefixes, not executables: a venv's python is a symlink to the system one.
    in_venv = Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve()
    if VENV_PYTHON.is_file() and not in_venv:
        os.environ["PETERREC_BENCH_REEXEC"] = "1"
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), "-m", "benchmarks.run", *sys.argv[1:]])


def large_vocab_rows(sizes: Sizes, timeout: float) -> list[dict]:
    """Row 6, measured in a child process so its peak memory is its own."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.large_vocab",
        f"--items={sizes.large_vocab}",
        f"--channels={sizes.large_channels}",
        f"--steps={sizes.large_steps}",
        f"--batch={sizes.batch}",
        f"--length={sizes.length}",
        f"--samples={sizes.large_samples}",
        f"--warmup={min(sizes.warmup, 3)}",
        f"--device={sizes.device}",
    ]
    config = f"V={sizes.large_vocab:,}, C={sizes.large_channels}, B×L={sizes.batch}×{sizes.length}"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        tail = (getattr(error, "stderr", "") or "").strip().splitlines()[-1:] or [type(error).__name__]
        return [
            {
                "row": "6. large-vocab pretrain",
                "config": config,
                "measure": "ms/step",
                "value": "failed",
                "ratio": "",
                "note": tail[0],
            }
        ]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    mode = "sparse rows + SparseAdam" if result["sparse_params"] else "dense grads + dense Adam"
    fits = "fits" if result["peak_rss_gib"] <= MEMORY_LIMIT_GIB else "EXCEEDS"
    return [
        {
            "row": "6. large-vocab pretrain",
            "config": f"{config}, sampled softmax S={result['num_samples']}, {mode}",
            "measure": "ms/step",
            "value": round(result["median_step_s"] * 1e3, 1),
            "ratio": "",
            "note": f"median of {result['steps']} steps",
            "detail": result,
        },
        {
            "row": "6. large-vocab pretrain",
            "config": config,
            "measure": "peak RSS GiB",
            "value": round(result["peak_rss_gib"], 2),
            "ratio": f"{fits} {MEMORY_LIMIT_GIB:.0f} GiB",
            "note": "ru_maxrss of the child process",
        },
    ] + _cuda_memory_row(result, config)


def _cuda_memory_row(result: dict, config: str) -> list[dict]:
    if result.get("peak_cuda_gib") is None:
        return []
    return [
        {
            "row": "6. large-vocab pretrain",
            "config": config,
            "measure": "peak CUDA GiB",
            "value": round(result["peak_cuda_gib"], 2),
            "ratio": "",
            "note": "torch.cuda.max_memory_allocated",
        }
    ]


def run(groups: list[str], sizes: Sizes) -> list[dict]:
    from benchmarks.eval_rows import eval_rows
    from benchmarks.finetune_rows import finetune_rows
    from benchmarks.pretrain_rows import pretrain_rows

    rows: list[dict] = []
    for group in groups:
        started = time.perf_counter()
        if group == "pretrain":
            rows += pretrain_rows(sizes)
        elif group == "finetune":
            rows += finetune_rows(sizes)
        elif group == "eval":
            rows += eval_rows(sizes)
        elif group == "large":
            rows += large_vocab_rows(sizes, timeout=120 if sizes.large_vocab < 100_000 else 3600)
        print(f"[{group}: {time.perf_counter() - started:.1f} s]", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    tune_cpu_allocator()  # as the peterrec command line does, for both sides of every comparison
    parser = argparse.ArgumentParser(description="peterrec benchmark suite: prints one markdown table")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few iterations: a smoke test")
    parser.add_argument(
        "--only", default=",".join(ROW_GROUPS), help=f"comma-separated subset of {', '.join(ROW_GROUPS)}"
    )
    parser.add_argument("--out", default="benchmarks/results", help="folder for the .md and .json results")
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="where every row runs (RecBole's too)"
    )
    parser.add_argument("--channels", help="comma-separated channel sizes (default 64,256)")
    parser.add_argument("--batch", type=int, help="sequences per step (default 64)")
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(ROW_GROUPS))
    if unknown:
        parser.error(f"unknown row group(s) {', '.join(unknown)}; choose from {', '.join(ROW_GROUPS)}")
    if argv is None:
        _reexec_in_venv()

    sizes = Sizes.quick() if args.quick else Sizes()
    sizes.device = args.device
    if args.channels:
        sizes.channels = tuple(int(c) for c in args.channels.split(","))
    if args.batch:
        sizes.batch = args.batch
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda, but torch sees no CUDA GPU")
        # Strict fp32 for both sides: cuDNN convolutions (RecBole's) default to TF32, matmuls (ours) do not.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    rows = run(groups, sizes)
    table = markdown_table(
        HEADER, [[r[key] for key in ("row", "config", "measure", "value", "ratio", "note")] for r in rows]
    )
    info = machine()
    title = "quick smoke run (tiny sizes, NOT a measurement)" if args.quick else "benchmark run"
    print(f"## peterrec {title}\n\n{json.dumps(info)}\n\n{table}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{'quick-' if args.quick else ''}{stamp}"
    (out / f"{name}.md").write_text(f"## peterrec {title}\n\n{table}\n", encoding="utf-8")
    payload = {
        "quick": args.quick,
        "machine": info,
        "sizes": vars(sizes),
        "rows": rows,
        "recbole": importlib.util.find_spec("recbole") is not None,
        "torch": torch.__version__,
    }
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    print(f"\nwritten {out / name}.md and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
