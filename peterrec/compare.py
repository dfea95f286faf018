"""`peterrec compare`: every strategy x seed x train fraction, each finetuned in its own process.

One process per run so that its peak resident memory (``ru_maxrss``) belongs to that run alone. Finished
run directories whose config matches are reused, so an interrupted compare picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from peterrec import checkpoint as ckpt
from peterrec.config import STRATEGY_NAMES, FinetuneConfig, dump_config
from peterrec.errors import CheckpointError, ConfigError, PeterRecError
from peterrec.metrics import paired_bootstrap_ci
from peterrec.reporting import REFERENCE, plot_results, primary_columns, render_table, write_outputs

logger = logging.getLogger(__name__)

USAGE_FILE = "usage.json"  # written by the run's own process after it finishes


class RunSpec(NamedTuple):
    """One finetune run of a compare."""

    strategy: str
    fraction: float
    seed: int
    lr: float | None  # None: the config's per-strategy lr

    def name(self) -> str:
        lr = "" if self.lr is None else f"-lr{self.lr:g}"
        return f"{self.strategy}-f{self.fraction:g}-s{self.seed}{lr}"


@dataclass
class RunRecord:
    spec: RunSpec
    run_dir: Path
    manifest: dict
    per_user: dict[str, list[float]]
    usage: dict


@dataclass
class CompareResult:
    """What a compare produced: the markdown table (with its note), its rows and every run it used."""

    out: Path
    table: str
    rows: list[dict]
    records: list[RunRecord]
    plot: Path | None = None


# ------------------------------------------------------------------------------------ option parsing


def parse_strategies(text: str) -> list[str]:
    """``all`` or a comma list of strategy names."""
    if text.strip() == "all":
        return list(STRATEGY_NAMES)
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in STRATEGY_NAMES:
            raise ConfigError(
                f"--strategies: unknown strategy '{name}'; choose from all, {', '.join(STRATEGY_NAMES)}"
            )
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"--strategies: expected distinct strategy names separated by commas, got {text!r}")
    return names


def parse_float_list(text: str, option: str, upper: float | None = None) -> list[float]:
    """``0.1,1.0`` -> [0.1, 1.0]; every value positive and at most ``upper``."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"{option}: {part.strip()!r} is not a number (expected e.g. 0.1,1.0)") from None
        if not value > 0 or (upper is not None and value > upper):
            bound = f"in (0, {upper:g}]" if upper is not None else "positive"
            raise ConfigError(f"{option}: every value must be {bound}, got {part.strip()}")
        values.append(value)
    if len(set(values)) != len(values):
        raise ConfigError(f"{option}: values must be distinct, got {text!r}")
    return values


# ------------------------------------------------------------------------------------------ running


def spec_config(config: FinetuneConfig, spec: RunSpec) -> FinetuneConfig:
    """The config a run is started with: the grid's lr, if any, as this strategy's lr."""
    if spec.lr is None:
        return config
    lrs = {**config.strategy.lr, spec.strategy: spec.lr}
    return dataclasses.replace(config, strategy=dataclasses.replace(config.strategy, lr=lrs))


def run_in_process(config: FinetuneConfig, backbone_dir: Path, spec: RunSpec, run_dir: Path) -> None:
    """One finetune in a fresh ``python -m peterrec.compare`` process, so its memory peak is its own.

    A subprocess rather than multiprocessing: nothing of the caller (its ``__main__``, its threads) is
    re-imported or inherited. The config travels as YAML, the child's error message back as a file.
    """
    level = logging.getLogger("peterrec").getEffectiveLevel()
    with tempfile.TemporaryDirectory(prefix="peterrec-compare-") as tmp:
        config_path, error_path = Path(tmp) / "config.yaml", Path(tmp) / "error.txt"
        config_path.write_text(dump_config(config), encoding="utf-8")
        args = [
            config_path,
            backbone_dir,
            run_dir,
            spec.strategy,
            spec.fraction,
            spec.seed,
            level,
            error_path,
        ]
        rc = subprocess.run([sys.executable, "-m", "peterrec.compare", *map(str, args)]).returncode
        if rc != 0:
            reason = error_path.read_text(encoding="utf-8") if error_path.is_file() else ""
            raise PeterRecError(
                reason or f"{run_dir}: the finetune process exited with {rc} (out of memory?)"
            )


def _child_main(argv: list[str]) -> None:
    """The child side of :func:`run_in_process`: finetune, then record this process's peak memory."""
    config_path, backbone_dir, run_dir, strategy, fraction, seed, level, error_path = argv
    logging.basicConfig(level=int(level), format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    import torch

    from peterrec.config import load_config
    from peterrec.transfer import run_finetune

    try:
        config = load_config(FinetuneConfig, config_path)
        kwargs = {"strategy": strategy, "seed": int(seed), "train_fraction": float(fraction)}
        done = run_finetune(config, backbone_dir, out=run_dir, **kwargs)
    except PeterRecError as exc:
        Path(error_path).write_text(str(exc), encoding="utf-8")
        sys.exit(2)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    usage = {"peak_rss_mb": rss / (1024 * 1024 if sys.platform == "darwin" else 1024), "peak_cuda_mb": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        usage["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    ckpt.atomic_write_json(Path(done) / USAGE_FILE, usage)


def backbone_sha(backbone_dir: Path) -> str:
    from peterrec.pretrain import WEIGHTS_FILE

    return ckpt.read_manifest(backbone_dir).get("sha256", {}).get(WEIGHTS_FILE, "")


def ensure_run(config: FinetuneConfig, backbone_dir: Path, spec: RunSpec, run_dir: Path) -> RunRecord:
    """Reuse a finished run made from the same config and backbone; otherwise run it afresh."""
    from peterrec.transfer import resolve_overrides

    config = spec_config(config, spec)
    expected = dump_config(resolve_overrides(config, spec.strategy, spec.seed, spec.fraction))
    if run_dir.is_dir():
        manifest = ckpt.read_manifest(run_dir)
        same_config = (run_dir / "config.yaml").read_text(encoding="utf-8") == expected
        if not same_config or manifest["base"]["sha256"] != backbone_sha(backbone_dir):
            raise CheckpointError(
                f"{run_dir}: a finished run from another config or backbone is there; "
                "delete it or pass another --out"
            )
        logger.info("reusing %s", run_dir)
    else:
        if ckpt.partial_dir(run_dir).exists():
            logger.info("removing the interrupted run %s", ckpt.partial_dir(run_dir))
            ckpt.discard_run_dir(ckpt.partial_dir(run_dir))
        logger.info("finetuning %s", spec.name())
        run_in_process(config, backbone_dir, spec, run_dir)
        manifest = ckpt.read_manifest(run_dir)
    per_user = json.loads((run_dir / "test_per_user.json").read_text(encoding="utf-8"))
    usage_path = run_dir / USAGE_FILE
    usage = json.loads(usage_path.read_text(encoding="utf-8")) if usage_path.is_file() else {}
    return RunRecord(spec, run_dir, manifest, per_user, usage)


# ---------------------------------------------------------------------------------------- summarising


def pick_lrs(records: list[RunRecord], monitor: str) -> dict[tuple[float, str], float | None]:
    """Per (fraction, strategy), the lr with the best mean validation ``monitor`` over seeds."""
    from peterrec.trainer import lower_is_better

    sign = -1.0 if lower_is_better(monitor) else 1.0
    scores: dict[tuple[float, str], dict[float | None, list[float]]] = {}
    for r in records:
        if monitor not in r.manifest["metrics"]:
            raise ConfigError(f"train.monitor '{monitor}' is not among the metrics of {r.run_dir}")
        key = (r.spec.fraction, r.spec.strategy)
        scores.setdefault(key, {}).setdefault(r.spec.lr, []).append(r.manifest["metrics"][monitor])
    return {key: max(by_lr, key=lambda lr: sign * np.mean(by_lr[lr])) for key, by_lr in scores.items()}


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; None for a single seed, where it is undefined)."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "values": v.tolist(),
    }


def main_metric(task_type: str, columns: list[str]) -> tuple[str, str]:
    """(table column, per-user key) of the metric the confidence intervals are computed on."""
    if task_type == "profile":
        return "test/accuracy", "accuracy"
    return next(c for c in columns if c.endswith("ndcg@10")), "ndcg@10"


def pooled_per_user(records: list[RunRecord], key: str) -> np.ndarray:
    """Per-user values averaged over seeds (the user order is fixed by task.split_seed)."""
    return np.mean([np.asarray(r.per_user[key], dtype=np.float64) for r in records], axis=0)


def strategy_row(
    runs: list[RunRecord], columns: list[str], reference: list[RunRecord] | None, key: str
) -> dict:
    first = runs[0]
    rss = [r.usage["peak_rss_mb"] for r in runs if r.usage.get("peak_rss_mb") is not None]
    cuda = [r.usage["peak_cuda_mb"] for r in runs if r.usage.get("peak_cuda_mb") is not None]
    ci = None
    if reference is not None and first.spec.strategy != REFERENCE:
        diff, low, high = paired_bootstrap_ci(pooled_per_user(runs, key), pooled_per_user(reference, key))
        ci = {"diff": diff, "low": low, "high": high}
    return {
        "method": first.spec.strategy,
        "train_fraction": first.spec.fraction,
        "lr": first.manifest["lr"],
        "seeds": [r.spec.seed for r in runs],
        "metrics": {c: mean_std([r.manifest["metrics"][c] for r in runs]) for c in columns},
        "trainable": first.manifest["parameters"]["trainable"],
        "stored_bytes": first.manifest["parameters"]["stored_bytes"],
        "seconds_per_epoch": float(np.mean([r.manifest["seconds_per_epoch"] or 0.0 for r in runs])),
        "peak_rss_mb": float(np.mean(rss)) if rss else None,
        "peak_cuda_mb": float(np.mean(cuda)) if cuda else None,
        "ci_vs_peterrec": ci,
    }


def baseline_rows(runs: list[RunRecord], columns: list[str]) -> list[dict]:
    """The task's simple baselines, as recorded by one of this fraction's runs (identical across them)."""
    rows = []
    for name, values in runs[0].manifest.get("baselines", {}).items():
        metrics = {c: {"mean": values[c], "std": None, "values": [values[c]]} for c in columns if c in values}
        rows.append(
            {"method": name, "train_fraction": runs[0].spec.fraction, "baseline": True, "metrics": metrics}
        )
    return rows


def build_rows(
    records: list[RunRecord], strategies: list[str], fractions: list[float], monitor: str
) -> list[dict]:
    columns = primary_columns(records[0].manifest["metrics"])
    _, key = main_metric(records[0].manifest["task"]["type"], columns)
    chosen = pick_lrs(records, monitor)
    rows = []
    for fraction in fractions:
        picked = {
            s: [r for r in records if r.spec[:2] == (s, fraction) and r.spec.lr == chosen[(fraction, s)]]
            for s in strategies
        }
        reference = picked.get(REFERENCE)
        rows += [strategy_row(picked[s], columns, reference, key) for s in strategies]
        rows += baseline_rows(picked[strategies[0]], columns)
    return rows


# ---------------------------------------------------------------------------------------- presenting


def describe_measurement(records: list[RunRecord], fractions: list[float], main: str, lr_grid) -> str:
    """The line under the table: task, split sizes, seeds, protocol, and what the cost columns mean."""
    task = records[0].manifest["task"]
    sizes = []
    for fraction in fractions:
        info = next(r.manifest["task"] for r in records if r.spec.fraction == fraction)
        users = [str(info[s]["users"]) for s in ("train", "valid", "test") if s in info]
        split = f"train/valid/test users {'/'.join(users)}" if users else f"{info.get('users')} users"
        sizes.append(f"{split} at train fraction {fraction:g}")
    if task["type"] == "profile":
        protocol = "classification of held-out users"
    elif task.get("eval") == "sampled-99":
        protocol = "sampled-99 ranking (the positive among 99 sampled negatives)"
    elif task["type"] == "coldrec":
        protocol = "full ranking over all target items"
    else:
        protocol = "full ranking over all items, history excluded (leave-last-out)"
    seeds = sorted({r.spec.seed for r in records})
    lr = f"lr picked per strategy on mean {lr_grid[1]} from {lr_grid[0]}" if lr_grid else "lr from the config"
    ci = (
        f" CI = per-user paired bootstrap 95% CI of (strategy − peterrec) on {main}, per-user values "
        "averaged over seeds first."
    )
    return (
        f"Measured: task {task['type']}; {'; '.join(sizes)}; protocol {protocol}; "
        f"mean ± std (ddof=1) over seeds {seeds}; {lr}. Peak RSS = peak resident memory of each run's own "
        f"process, torch runtime included.{ci if any(r.spec.strategy == REFERENCE for r in records) else ''}"
    )


def run_compare(
    config: FinetuneConfig,
    backbone_dir: str | Path,
    strategies: Sequence[str] = STRATEGY_NAMES,
    seeds: int | Sequence[int] = 3,
    train_fractions: Sequence[float] = (1.0,),
    lr_grid: Sequence[float] | None = None,
    out: str | Path | None = None,
    plot: str | Path | None = None,
) -> CompareResult:
    """Finetune every strategy x seed x fraction (x lr) in its own process; write and return the table.

    ``seeds``: a count (``train.seed``, ``train.seed + 1``, ...) or explicit seeds. Run directories go to
    ``<out>/runs/<strategy>-f<fraction>-s<seed>[-lr<lr>]``; finished ones with a matching config are reused.
    """
    parse_strategies(",".join(strategies))  # the command line's checks, for Python callers too
    parse_float_list(",".join(map(str, train_fractions)), "--train-fraction", upper=1.0)
    parse_float_list(",".join(map(str, lr_grid or [1])), "--lr-grid")
    seed_list = [config.train.seed + i for i in range(seeds)] if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ConfigError("--seeds: need at least one seed")
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ConfigError(f"--plot: expected a .png file name, got {plot}")
    backbone_dir = Path(backbone_dir)
    out = Path(out) if out else Path("checkpoints") / f"compare-{config.name}-{config.task.type}"
    lrs = list(lr_grid) if lr_grid else [None]
    records = []
    for fraction in train_fractions:
        for strategy in strategies:
            for lr in lrs:
                for seed in seed_list:
                    spec = RunSpec(strategy, fraction, seed, lr)
                    records.append(ensure_run(config, backbone_dir, spec, out / "runs" / spec.name()))
    monitor = config.resolved_monitor()
    rows = build_rows(records, list(strategies), list(train_fractions), monitor)
    columns = primary_columns(records[0].manifest["metrics"])
    main, _ = main_metric(records[0].manifest["task"]["type"], columns)
    table = render_table(rows, columns, main, list(train_fractions))
    note = describe_measurement(records, list(train_fractions), main, (lrs, monitor) if lr_grid else None)
    text = f"{table}\n\n{note}"
    write_outputs(out, text, rows, columns)
    plotted = plot_results(rows, main, list(train_fractions), Path(plot)) if plot else None
    return CompareResult(out, text, rows, records, plotted)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
