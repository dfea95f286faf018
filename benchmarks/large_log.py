"""Large logs: first read (cache build), cache load and pretraining throughput on a generated click log.

``python -m benchmarks.large_log`` generates a 10M-click CSV (100k users, 1M items, log-uniform, i.e.
Zipf-like, item popularity, shuffled rows with timestamps) under ``benchmarks/results/large_log/``
(git-ignored; reused when present), then runs each measurement in its own process so that the peak
resident memory (``ru_maxrss`` of that child) is the measurement's alone:

1. ``read``: the first read, which streams the CSV and writes the memory-mapped cache;
2. ``load``: a later ``load_next_item_data`` (cache hit: map the arrays, split, encode);
3. ``train``: pretraining steps with sampled softmax and sparse item tables (``Trainer`` with
   ``steps_per_epoch`` cut to ``--steps``; validation is a sampled ranking of ``--eval-sample`` users),
   once as one process and once under ``torchrun --standalone --nproc_per_node=2`` (gloo).

It prints one JSON line per measurement and writes them all to ``benchmarks/results/large_log.json``.
``--clicks/--users/--items`` shrink it for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path("benchmarks/results")


def generate(path: Path, users: int, items: int, clicks: int, seed: int = 0) -> None:
    """A CSV click log: every user has at least 3 clicks; item ranks log-uniform, ids shuffled."""
    rng = np.random.default_rng(seed)
    extra = rng.multinomial(clicks - 3 * users, rng.dirichlet(np.ones(users)))
    user = np.repeat(np.arange(users), 3 + extra)
    rank = np.floor(np.exp(rng.uniform(0.0, np.log(items + 1), size=clicks))).astype(np.int64) - 1
    item = rng.permutation(items)[np.minimum(rank, items - 1)]
    stamp = 1_000_000_000 + rng.integers(0, 10_000_000, size=clicks)
    order = rng.permutation(clicks)  # rows interleaved across users, not grouped
    user, item, stamp = user[order], item[order], stamp[order]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("user_id,item_id,timestamp\n")
        step = 1_000_000
        for start in range(0, clicks, step):
            rows = zip(
                user[start : start + step].tolist(),
                item[start : start + step].tolist(),
                stamp[start : start + step].tolist(),
                strict=True,
            )
            f.write("".join(f"u{u},i{i},{t}\n" for u, i, t in rows))
    os.replace(tmp, path)


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _data_config(path: str):
    from peterrec.config import DataConfig

    return DataConfig(path=path, max_len=50)


def child_read(path: str) -> dict:
    from peterrec.data.log_cache import load_or_build

    started = time.perf_counter()
    log = load_or_build(_data_config(path))
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "peak_rss_gib": round(_peak_gib(), 3),
        "cached": log.cached,
        "users": len(log.users),
        "items": len(log.vocab),
        "clicks": int(len(log.items)),
    }


def child_load(path: str) -> dict:
    from peterrec.data.log_cache import load_or_build
    from peterrec.data.next_item import load_next_item_data

    started = time.perf_counter()
    log = load_or_build(_data_config(path))
    cache_seconds = time.perf_counter() - started
    started = time.perf_counter()
    data = load_next_item_data(_data_config(path))
    seconds = time.perf_counter() - started
    return {
        "cache_load_seconds": round(cache_seconds, 2),
        "cached": log.cached,
        "load_next_item_data_seconds": round(seconds, 2),
        "peak_rss_gib": round(_peak_gib(), 3),
        "stats": data.stats(),
    }


def child_train(
    path: str, steps: int, batch: int, channels: int, samples: int, eval_sample: int
) -> dict | None:
    import torch

    from peterrec.commands.pretrain import make_step_loss
    from peterrec.config import ModelConfig, ObjectiveConfig, PretrainConfig, TrainConfig
    from peterrec.data.next_item import load_next_item_data
    from peterrec.evaluation.next_item import evaluate_next_item_model
    from peterrec.model.next_item import build_next_item_model
    from peterrec.training.distributed import device_for, from_environment
    from peterrec.training.trainer import Trainer

    config = PretrainConfig(
        data=_data_config(path),
        model=ModelConfig(channels=channels, sparse_embedding=True),
        objective=ObjectiveConfig(softmax="sampled", num_samples=samples),
        train=TrainConfig(epochs=1, batch_size=batch, progress=False, device="cpu"),
    )
    device = torch.device("cpu")
    distributed = from_environment(device, sparse=True)
    device = device_for(distributed, device)
    torch.manual_seed(0)
    started = time.perf_counter()
    data = load_next_item_data(config.data)
    load_seconds = time.perf_counter() - started
    model = build_next_item_model(config.model, data.num_items, config.data.max_len)
    step_loss, steps_per_epoch = make_step_loss(model, config, data, device, distributed)
    evals = {}

    def validate() -> dict:
        tick = time.perf_counter()
        metrics = evaluate_next_item_model(model, data, "valid", 256, device, sample=eval_sample)
        evals["seconds"] = round(time.perf_counter() - tick, 2)
        evals["metrics"] = {k: round(v, 5) for k, v in metrics.items()}
        return {"valid/ndcg@10": next(v for k, v in metrics.items() if k.endswith("/ndcg@10")), **metrics}

    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(
            model,
            config.train,
            steps_per_epoch=min(steps, steps_per_epoch),
            step_loss=step_loss,
            validate=validate,
            work_dir=Path(work),
            device=device,
            monitor="valid/ndcg@10",
            distributed=distributed,
        )
        result = trainer.fit()
    if not distributed.is_main:
        return None
    row = result.history[-1]
    return {
        "processes": distributed.world_size,
        "torch_threads": torch.get_num_threads(),
        "steps": min(steps, steps_per_epoch),
        "steps_per_epoch": steps_per_epoch,
        "global_batch": batch,
        "channels": channels,
        "num_samples": samples,
        "train_seconds": row["train/seconds"],
        "tokens_per_s": row["train/tokens_per_s"],
        "ms_per_step": round(1000 * row["train/seconds"] / min(steps, steps_per_epoch), 1),
        "data_load_seconds": round(load_seconds, 2),
        "sampled_eval": evals,
        "peak_rss_gib_rank0": round(_peak_gib(), 3),
    }


def _run_child(args: list[str], env: dict, torchrun: int = 0) -> dict:
    if torchrun:
        command = ["torchrun", "--standalone", f"--nproc_per_node={torchrun}", "-m", "benchmarks.large_log"]
    else:
        command = [sys.executable, "-m", "benchmarks.large_log"]
    started = time.perf_counter()
    done = subprocess.run(command + args, env=env, capture_output=True, text=True, check=False)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not rows:
        errors = [line for line in done.stderr.splitlines() if "Error" in line]
        rows = [{"failed": done.returncode, "error": errors[-1] if errors else done.stderr[-500:]}]
    row = rows[-1]
    row["wall_seconds"] = round(time.perf_counter() - started, 2)
    row["command"] = " ".join(
        (["torchrun", "..."] if torchrun else ["python"]) + ["-m", "benchmarks.large_log"] + args
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("read", "load", "train"))
    parser.add_argument("--path")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--eval-sample", type=int, default=1000)
    parser.add_argument("--only", default="read,load,train1,train2")
    args = parser.parse_args()
    if args.child == "read":
        print(json.dumps(child_read(args.path)))
        return
    if args.child == "load":
        print(json.dumps(child_load(args.path)))
        return
    if args.child == "train":
        row = child_train(args.path, args.steps, args.batch, args.channels, args.samples, args.eval_sample)
        if row is not None:
            print(json.dumps(row))
        return

    folder = RESULTS / "large_log"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"clicks_{args.clicks}_{args.users}u_{args.items}i.csv"
    out: dict = {
        "machine": subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:16]
    }
    if not path.exists():
        tick = time.perf_counter()
        generate(path, args.users, args.items, args.clicks)
        out["generate_seconds"] = round(time.perf_counter() - tick, 1)
    out["file_mib"] = round(path.stat().st_size / 2**20, 1)
    print(json.dumps({"file": str(path), "mib": out["file_mib"]}), flush=True)
    cache = folder / "cache"
    env = {**os.environ, "PETERREC_CACHE": str(cache.resolve())}
    only = args.only.split(",")
    if "read" in only:
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        out["first_read"] = _run_child(["--child", "read", "--path", str(path)], env)
        print(json.dumps({"first_read": out["first_read"]}), flush=True)
    if "load" in only:
        out["cache_load"] = _run_child(["--child", "load", "--path", str(path)], env)
        print(json.dumps({"cache_load": out["cache_load"]}), flush=True)
    common = [
        "--child",
        "train",
        "--path",
        str(path),
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--channels",
        str(args.channels),
        "--samples",
        str(args.samples),
        "--eval-sample",
        str(args.eval_sample),
    ]
    if "train1" in only:
        out["train_1_process"] = _run_child(common, env)
        print(json.dumps({"train_1_process": out["train_1_process"]}), flush=True)
    if "train2" in only:
        out["train_2_processes"] = _run_child(common, {**env, "OMP_NUM_THREADS": "1"}, torchrun=2)
        print(json.dumps({"train_2_processes": out["train_2_processes"]}), flush=True)
    (RESULTS / "large_log.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
