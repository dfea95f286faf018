"""Row 7: validation NDCG@10 against wall time on ML-100K, ``peterrec pretrain`` vs RecBole's own NextItNet.

``python -m benchmarks.end_to_end [--cap 600] [--out benchmarks/results/end_to_end] [--only ours,recbole]``

- ours: ``peterrec pretrain -c configs/pretrain/ml100k_autoregressive.yaml`` in a subprocess
  (all-position causal loss); each epoch's row of ``metrics.jsonl`` is time-stamped by the wall clock as it
  appears.
- RecBole 1.2.1: its own ``Config``/``create_dataset``/``data_preparation``/``Trainer`` (prefix-augmented
  sequences, loss on the last position, CE, batch 256, C = 64, dilations [1, 4] × 4 blocks to match ours, max
  length 50, time-ordered leave-one-out, full ranking). Its ``Trainer.fit`` callback time-stamps each
  validation.
  Needs ``bash benchmarks/setup_recbole.sh --end-to-end`` (pandas, for RecBole's data pipeline).

Each side is capped at ``--cap`` seconds. The result is JSON with the (seconds, valid NDCG@10) curves, each
side's test NDCG@10, and the time each side first reaches RecBole's best validation NDCG@10; ``--plot`` draws
the curves with matplotlib when it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ML100K = Path("data/external/ml-100k")
OUR_CONFIG = Path("configs/pretrain/ml100k_autoregressive.yaml")


def run_ours(cap: float, work: Path, extra: list[str]) -> dict:
    """``peterrec pretrain`` in a subprocess, polling its metrics.jsonl to time-stamp every epoch."""
    from peterrec.checkpoint import partial_dir

    run_dir = work / "ours"
    command = [
        sys.executable,
        "-c",
        "from peterrec.commands.cli import main; main()",
        "pretrain",
        "-c",
        str(OUR_CONFIG),
        "--out",
        str(run_dir),
        *extra,
    ]
    curve, seen, stopped_at_cap = [], 0, False
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        finished = process.poll() is not None
        for directory in (partial_dir(run_dir), run_dir):
            history = directory / "metrics.jsonl"
            if history.is_file():
                lines = history.read_text(encoding="utf-8").splitlines()
                for line in lines[seen:]:
                    row = json.loads(line)
                    curve.append(
                        {"seconds": time.perf_counter() - started, "valid_ndcg@10": row["valid/ndcg@10"]}
                    )
                seen = max(seen, len(lines))
        if finished:
            break
        if time.perf_counter() - started > cap:
            stopped_at_cap = True
            process.terminate()
            process.wait()
            break
        time.sleep(0.2)
    result = {"curve": curve, "wall_seconds": time.perf_counter() - started, "stopped_at_cap": stopped_at_cap}
    manifest = run_dir / "manifest.json"
    if manifest.is_file():
        metrics = json.loads(manifest.read_text(encoding="utf-8"))["metrics"]
        result["test_ndcg@10"] = metrics.get("test/ndcg@10")
        result["valid_ndcg@10"] = metrics.get("valid/ndcg@10")
    elif process.returncode and not stopped_at_cap:
        result["error"] = (process.stderr.read() if process.stderr else "").strip().splitlines()[-3:]
    return result


class _TimeUp(Exception):
    pass


def run_recbole(cap: float, work: Path, epochs: int) -> dict:
    """RecBole's own NextItNet pipeline, capped at ``cap`` seconds of training."""
    from benchmarks import recbole_shims

    recbole_shims.install_numpy_aliases()
    with recbole_shims.keep_anomaly_mode():
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.model.sequential_recommender.nextitnet import NextItNet
        from recbole.trainer import Trainer
        from recbole.utils import init_seed

    config = Config(
        model="NextItNet",
        dataset="ml-100k",
        config_dict={
            "data_path": str(ML100K.parent.resolve()),
            "checkpoint_dir": str(work / "recbole"),
            "embedding_size": 64,
            "block_num": 4,
            "dilations": [1, 4],
            "kernel_size": 3,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "MAX_ITEM_LIST_LENGTH": 50,
            "train_batch_size": 256,
            "epochs": epochs,
            "stopping_step": 10,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
            "metrics": ["NDCG", "Hit", "MRR"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "device": "cpu",
            "use_gpu": False,
            "show_progress": False,
            "seed": 0,
            "reproducibility": True,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    with recbole_shims.keep_anomaly_mode():
        model = NextItNet(config, train_data.dataset)
    trainer = Trainer(config, model)
    curve = []
    started = time.perf_counter()

    def on_valid(epoch: int, valid_score: float) -> None:
        curve.append({"seconds": time.perf_counter() - started, "valid_ndcg@10": float(valid_score)})
        if time.perf_counter() - started > cap:
            raise _TimeUp

    with contextlib.suppress(_TimeUp):
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=on_valid)
    wall = time.perf_counter() - started
    with recbole_shims.trusted_torch_load():
        test = trainer.evaluate(test_data, load_best_model=True, model_file=trainer.saved_model_file)
    best_valid = max((p["valid_ndcg@10"] for p in curve), default=None)
    return {
        "curve": curve,
        "wall_seconds": wall,
        "valid_ndcg@10": best_valid,
        "test_ndcg@10": test["ndcg@10"],
    }


def time_to_reach(curve: list[dict], target: float | None) -> float | None:
    """Wall seconds at the first validation that reaches ``target``."""
    if target is None:
        return None
    return next((p["seconds"] for p in curve if p["valid_ndcg@10"] >= target), None)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        curve = result.get("curve") or []
        ax.plot([p["seconds"] for p in curve], [p["valid_ndcg@10"] for p in curve], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("valid NDCG@10")
    ax.set_title("ML-100K, NextItNet C=64: peterrec pretrain vs RecBole 1.2.1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description="ML-100K NDCG@10 vs wall time, ours vs RecBole")
    parser.add_argument("--cap", type=float, default=600.0, help="seconds per side")
    parser.add_argument("--only", default="ours,recbole")
    parser.add_argument("--out", default="benchmarks/results/end_to_end")
    parser.add_argument("--recbole-epochs", type=int, default=300)
    parser.add_argument("--set", action="append", default=[], help="extra --set for peterrec pretrain")
    parser.add_argument("--plot", action="store_true")
    args = parser.parse_args()
    if not (ML100K / "ml-100k.inter").is_file():
        raise SystemExit(
            f"{ML100K}/ml-100k.inter missing: ../shared/data/get-movielens.sh ml-100k data/external"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sides = [s.strip() for s in args.only.split(",") if s.strip()]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="peterrec-e2e-") as tmp:
        work = Path(tmp)
        if "recbole" in sides:
            try:
                results["recbole"] = run_recbole(args.cap, work, args.recbole_epochs)
            except ImportError as error:
                results["recbole"] = {"error": f"{error}; run bash benchmarks/setup_recbole.sh --end-to-end"}
        if "ours" in sides:
            extra = [item for value in args.set for item in ("--set", value)]
            results["ours"] = run_ours(args.cap, work, extra)
        shutil.rmtree(work / "recbole", ignore_errors=True)
    target = results.get("recbole", {}).get("valid_ndcg@10")
    for result in results.values():
        result["seconds_to_recbole_best_valid"] = time_to_reach(result.get("curve", []), target)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    if args.plot:
        plot(results, out / f"{stamp}.png")
    summary = {
        name: {
            k: r.get(k)
            for k in (
                "valid_ndcg@10",
                "test_ndcg@10",
                "wall_seconds",
                "seconds_to_recbole_best_valid",
                "error",
            )
        }
        for name, r in results.items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
