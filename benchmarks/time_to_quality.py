"""Time to quality: valid NDCG@10 against training time for each output-layer variant.

``python -m benchmarks.time_to_quality --log ml100k --seeds 0 1 2`` runs ``peterrec pretrain`` (C=64, the
shipped ML-100K config) once per variant and seed, each in its own process, and reads every epoch's
``train/seconds``, ``train/tokens_per_s`` and ``valid/ndcg@10`` from the run's ``metrics.jsonl``.
``--log items100k`` does the same on a generated log with 100,000 items (written under
``benchmarks/results/``, git-ignored): users drift between item clusters and follow item-to-item chains,
so there is sequential structure to learn, and item popularity is Zipf-like inside each cluster.

Time is cumulative training time (the same full-ranking validation after every epoch is left out, it is
identical work for every variant). For each variant the summary reports tokens/s, the best valid NDCG@10
and the time at which an epoch first reaches 95% of the exact softmax's best valid NDCG@10 (mean over
seeds). ``--base PATH`` times a checkout of an earlier commit (``PYTHONPATH=PATH``) as the row ``before``.
``--plot`` draws the curves (matplotlib, if installed); ``--merge`` adds the runs of an earlier result (more
variants of the same log without re-running the others).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path("benchmarks/results/time_to_quality")
ML100K_CONFIG = Path("configs/pretrain/ml100k_autoregressive.yaml")

# name -> overrides of the pretraining config
VARIANTS: dict[str, list[str]] = {
    "exact": ["objective.softmax=full"],
    "exact_fp32": ["objective.softmax=full", "train.precision=fp32"],
    "sampled_100": ["objective.softmax=sampled", "objective.num_samples=100"],
    "sampled_1024": ["objective.softmax=sampled", "objective.num_samples=1024"],
    "sampled_1024_in_batch": [
        "objective.softmax=sampled",
        "objective.num_samples=1024",
        "objective.in_batch_negatives=true",
    ],
    "sampled_pop075_4096_in_batch": [
        "objective.softmax=sampled",
        "objective.num_samples=4096",
        "objective.sampler=popularity",
        "objective.sampler_power=0.75",
        "objective.in_batch_negatives=true",
    ],
    "sampled_pop05_4096_in_batch": [
        "objective.softmax=sampled",
        "objective.num_samples=4096",
        "objective.sampler=popularity",
        "objective.sampler_power=0.5",
        "objective.in_batch_negatives=true",
    ],
    "sampled_pop075_1024_in_batch": [
        "objective.softmax=sampled",
        "objective.num_samples=1024",
        "objective.sampler=popularity",
        "objective.sampler_power=0.75",
        "objective.in_batch_negatives=true",
    ],
}


def generate_items100k(path: Path, users: int = 10_000, items: int = 100_000, seed: int = 0) -> None:
    """A click log with learnable sequential structure over ``items`` items (1,000 clusters of 100)."""
    rng = np.random.default_rng(seed)
    clusters, size = items // 100, 100
    successor = np.concatenate([c * size + rng.permutation(size) for c in range(clusters)])
    zipf = 1.0 / np.arange(1, size + 1)
    within = zipf / zipf.sum()
    cluster_weight = 1.0 / np.arange(1, clusters + 1) ** 0.8
    cluster_p = cluster_weight / cluster_weight.sum()
    item_names = rng.permutation(items)  # ids do not reveal clusters
    rows = []
    for user in range(users):
        length = int(rng.integers(20, 61))
        cluster = int(rng.choice(clusters, p=cluster_p))
        item = cluster * size + int(rng.choice(size, p=within))
        for t in range(length):
            rows.append(f"u{user},i{item_names[item]},{t}\n")
            draw = rng.random()
            if draw < 0.05:  # drift to another cluster
                cluster = int(rng.choice(clusters, p=cluster_p))
                item = cluster * size + int(rng.choice(size, p=within))
            elif draw < 0.65:  # follow the chain
                item = int(successor[item])
            else:  # a popular item of the same cluster
                item = cluster * size + int(rng.choice(size, p=within))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("user_id,item_id,timestamp\n" + "".join(rows), encoding="utf-8")
    os.replace(tmp, path)


def log_config(log: str) -> tuple[Path, list[str]]:
    """(config file, overrides) of a log name: the shipped ML-100K config, pointed at the 100k-item log."""
    if log == "ml100k":
        return ML100K_CONFIG, []
    path = RESULTS / "items100k.csv"
    if not path.exists():
        generate_items100k(path)
    data = [f"data.path={path}", "data.format=csv", "data.time_column=timestamp", "name=items100k"]
    return ML100K_CONFIG, [*data, "train.epochs=8", "train.patience=2", "train.eval_batch_size=512"]


def run_variant(config: Path, overrides: list[str], seed: int, base: Path | None) -> list[dict]:
    """One pretraining run in a child process; its per-epoch metrics. With ``base`` the earlier checkout
    runs, with its own copy of the config (the data paths in it are relative to this folder)."""
    config = base / config if base is not None else config
    work = Path(tempfile.mkdtemp(prefix="ttq-"))
    env = dict(os.environ)
    if base is not None:
        env["PYTHONPATH"] = str(base)
    sets = [arg for o in [*overrides, f"train.seed={seed}", "train.progress=false"] for arg in ("--set", o)]
    command = [sys.executable, "-m", "peterrec.commands.cli", "pretrain", "--config", str(config)]
    try:
        done = subprocess.run([*command, "--out", str(work / "run"), *sets], env=env, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()[-2000:]}")
        lines = (work / "run" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def curve(history: list[dict]) -> list[tuple[float, float]]:
    """(cumulative training seconds, valid NDCG@10) after each epoch."""
    seconds = np.cumsum([row["train/seconds"] for row in history])
    return [(float(s), row["valid/ndcg@10"]) for s, row in zip(seconds, history, strict=True)]


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    return next((s for s, value in points if value >= target), None)


def best(history: list[dict]) -> float:
    return max(row["valid/ndcg@10"] for row in history)


def summarise(runs: dict[str, list[list[dict]]]) -> dict[str, dict]:
    reference = "exact_fp32" if "exact_fp32" in runs else "exact"
    target = 0.95 * float(np.mean([best(h) for h in runs[reference]]))
    table = {}
    for name, histories in runs.items():
        times = [time_to(curve(h), target) for h in histories]
        reached = [t for t in times if t is not None]
        all_reached = len(reached) == len(times)
        seconds = [sum(r["train/seconds"] for r in h) for h in histories]
        tokens = [float(np.median([r["train/tokens_per_s"] for r in h])) for h in histories]
        table[name] = {
            "tokens_per_s": round(float(np.mean(tokens)), 1),
            "tokens_per_s_runs": [round(t, 1) for t in tokens],
            "best_valid_ndcg10": round(float(np.mean([best(h) for h in histories])), 4),
            "best_valid_runs": [round(best(h), 4) for h in histories],
            "seconds_to_95pct_exact": round(float(np.mean(reached)), 1) if all_reached else None,
            "reached_95pct": f"{len(reached)}/{len(times)}",
            "train_seconds": round(float(np.mean(seconds)), 1),
            "epochs": [len(h) for h in histories],
        }
    return {"reference": reference, "target_valid_ndcg10": round(target, 4), "variants": table}


def plot(runs: dict[str, list[list[dict]]], title: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for index, (name, histories) in enumerate(runs.items()):
        for k, history in enumerate(histories):
            xs, ys = zip(*curve(history), strict=True)
            ax.plot(xs, ys, color=f"C{index}", alpha=0.8, label=name if k == 0 else None, marker=".")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("valid NDCG@10 (full ranking)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", choices=["ml100k", "items100k"], default="ml100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--base", type=Path, help="a checkout of an earlier commit, timed as 'before'")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--merge", type=Path, help="an earlier result of the same log: its runs are kept")
    args = parser.parse_args()
    config, log_overrides = log_config(args.log)
    plan = {name: (VARIANTS[name], None) for name in args.variants}
    if args.base is not None:  # the earlier commit's shipped config: full softmax, fp32
        plan = {"before": (["objective.softmax=full"], args.base), **plan}
    runs: dict[str, list[list[dict]]] = json.loads(args.merge.read_text())["runs"] if args.merge else {}
    for seed in args.seeds:  # seeds outermost: every variant sees the same machine state in turn
        for name, (overrides, base) in plan.items():
            history = run_variant(config, [*log_overrides, *overrides], seed, base)
            runs.setdefault(name, []).append(history)
            summary = f"{len(history)} epochs, best valid {best(history):.4f}"
            print(f"{args.log} seed {seed} {name}: {summary}", flush=True)
    result = {"log": args.log, "seeds": args.seeds, **summarise(runs), "runs": runs}
    out = args.out or RESULTS / f"{args.log}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.plot:
        plot(runs, f"{args.log}: valid NDCG@10 against training time", args.plot)


if __name__ == "__main__":
    main()
