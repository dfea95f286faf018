"""`peterrec compare`: every strategy x seed x train fraction (x backbone), each finetuned in its own process.

One process per run so that its peak resident memory (``ru_maxrss``) belongs to that run alone. Finished
run directories whose config matches are reused, so an interrupted compare picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np

from peterrec import checkpoint as ckpt
from peterrec.choices import CLASSIC_STRATEGIES, STRATEGIES
from peterrec.commands.common import config_option, set_option
from peterrec.commands.finetune import resolve_overrides, run_finetune, without_inert_options
from peterrec.config import AdapterConfig, FinetuneConfig, dump_config, load_config
from peterrec.errors import CheckpointError, ConfigError, PeterRecError
from peterrec.evaluation.user_results import UserOutputs, paired_bootstrap_metric_ci, pool_folds
from peterrec.manifest import BackboneManifest, FinetuneManifest, read_manifest
from peterrec.reporting import REFERENCE, plot_results, primary_columns, render_table, write_outputs
from peterrec.runs import PER_USER_FILE, WEIGHTS_FILE
from peterrec.tasks import resolve_monitor, task_class
from peterrec.training.trainer import lower_is_better

logger = logging.getLogger(__name__)

USAGE_FILE = "usage.json"  # written by the run's own process after it finishes


class RunSpec(NamedTuple):
    """One finetune run of a compare."""

    strategy: str
    fraction: float
    seed: int
    lr: float | None  # None: the config's per-strategy lr
    fold: int | None = None  # the cross-validation fold (task.fold); None: the one split of task.split
    backbone: str | None = None  # the backbone's label when a compare has several; None: its only one

    def name(self) -> str:
        lr = "" if self.lr is None else f"-lr{self.lr:g}"
        fold = "" if self.fold is None else f"-k{self.fold}"
        return f"{self.strategy.replace(':', '-')}-f{self.fraction:g}-s{self.seed}{lr}{fold}"

    def relative_dir(self) -> Path:
        """Its directory under the compare's ``runs/``: in a folder per backbone when there are several."""
        return Path(self.backbone or "", self.name())


@dataclass(frozen=True)
class Backbone:
    """A pretrain run that a compare finetunes: its label in row names, its directory, its weights' sha256."""

    label: str
    path: Path
    sha256: str


@dataclass
class RunRecord:
    spec: RunSpec
    run_dir: Path
    manifest: FinetuneManifest
    per_user: dict  # test_per_user.json: the run's per-user test outputs, and its baselines' ("baselines")
    usage: dict

    def outputs(self, baseline: str | None = None) -> UserOutputs:
        """The run's per-user test outputs, or those of one of its simple baselines."""
        if baseline is None:
            return UserOutputs.from_json(self.per_user)
        return UserOutputs.from_json(self.per_user["baselines"][baseline], users=self.per_user.get("users"))


@dataclass
class CompareResult:
    """What a compare produced: the markdown table (with its note), its rows and every run it used."""

    out: Path
    table: str
    rows: list[dict]
    records: list[RunRecord]
    plot: Path | None = None


# ------------------------------------------------------------------------------------ option parsing


def split_strategy(name: str) -> tuple[str, str | None]:
    """``adapter:lora`` -> (``adapter``, ``lora``): the ``adapter`` strategy with that adapter kind."""
    strategy, _, kind = name.partition(":")
    return strategy, (kind or None)


def parse_strategies(text: str) -> list[str]:
    """``all`` (the seven classic strategies) or a comma list of strategy names; ``adapter:KIND`` runs the
    ``adapter`` strategy with a registered adapter kind (its default options)."""
    from peterrec.model.adapters import ADAPTERS

    if text.strip() == "all":
        return list(CLASSIC_STRATEGIES)
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        strategy, kind = split_strategy(name)
        if strategy not in STRATEGIES or (
            kind is not None and (strategy != "adapter" or kind not in ADAPTERS)
        ):
            raise ConfigError(
                f"--strategies: unknown strategy '{name}'; choose from all, {', '.join(STRATEGIES)}, "
                f"or adapter:KIND with a kind of {', '.join(ADAPTERS)}"
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


def backbone_labels(paths: Sequence[str | Path]) -> list[str]:
    """Each backbone's run directory name; where names clash, as many trailing path components as tell the
    clashing ones apart. The same directory given twice is an error."""
    seen: dict[Path, str | Path] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise ConfigError(
                f"--backbone: {path} is the same directory as {seen[resolved]}; pass each backbone once"
            )
        seen[resolved] = path
    parts = [Path(os.path.abspath(path)).parts[1:] for path in paths]  # symlinks kept: the names given
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1]
        if not clashing:
            return labels
        for i in clashing:  # distinct absolute paths differ in some trailing component
            depth[i] += 1


def read_backbone(path: Path, label: str) -> Backbone:
    """A ``--backbone`` directory, checked before any run starts: it must be a complete pretrain run."""
    manifest = read_manifest(path)
    if not isinstance(manifest, BackboneManifest):
        raise CheckpointError(
            f"{path}: is a '{manifest.kind}' run, expected a 'backbone' run (a pretrain output)"
        )
    return Backbone(label, path, manifest.sha256.get(WEIGHTS_FILE, ""))


# ------------------------------------------------------------------------------------------ running


def spec_config(config: FinetuneConfig, spec: RunSpec) -> FinetuneConfig:
    """The config a run is started with: the adapter kind of an ``adapter:KIND`` entry (with its default
    options, unless the config already names that kind) and the grid's lr, if any, as this strategy's lr."""
    strategy, kind = split_strategy(spec.strategy)
    if spec.fold is not None:
        config = dataclasses.replace(config, task=dataclasses.replace(config.task, fold=spec.fold))
    if kind is not None and kind != config.adapter.kind:
        adapter = AdapterConfig.parse(
            {"kind": kind, "layers": config.adapter.layers}, "adapter", "--strategies"
        )
        config = dataclasses.replace(config, adapter=adapter)
    if spec.lr is None:
        return config
    lrs = {**config.strategy.lr, strategy: spec.lr}
    return dataclasses.replace(config, strategy=dataclasses.replace(config.strategy, lr=lrs))


def run_in_process(
    config: FinetuneConfig,
    backbone_dir: Path,
    spec: RunSpec,
    run_dir: Path,
    resume: bool = False,
    threads: int | None = None,
) -> None:
    """One finetune in a fresh ``python -m peterrec.commands.compare`` process, so its memory peak is its own.

    A subprocess rather than multiprocessing: nothing of the caller (its ``__main__``, its threads) is
    re-imported or inherited. The config travels as YAML, the child's error message back as a file.
    ``threads``: the child's intra-op threads (``OMP_NUM_THREADS``); None leaves torch's default.
    """
    level = logging.getLogger("peterrec").getEffectiveLevel()
    with tempfile.TemporaryDirectory(prefix="peterrec-compare-") as tmp:
        config_path, error_path = Path(tmp) / "config.yaml", Path(tmp) / "error.txt"
        config_path.write_text(dump_config(config), encoding="utf-8")
        args = [
            config_path,
            backbone_dir,
            run_dir,
            split_strategy(spec.strategy)[0],
            spec.fraction,
            spec.seed,
            level,
            error_path,
            int(resume),
        ]
        env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
        command = [sys.executable, "-m", "peterrec.commands.compare", *map(str, args)]
        rc = subprocess.run(command, env=env).returncode
        if rc != 0:
            raise PeterRecError(child_failure(run_dir, rc, error_path))


def child_failure(run_dir: Path, returncode: int, error_path: Path) -> str:
    """Why a finetune process failed: its own message when it wrote one, else how it ended."""
    written = error_path.read_text(encoding="utf-8").strip() if error_path.is_file() else ""
    if written:
        return written
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"{run_dir}: the finetune process was killed by {name}{hint}"
    return f"{run_dir}: the finetune process exited with status {returncode} without a message"


def _child_main(argv: list[str]) -> None:
    """The child side of :func:`run_in_process`: finetune, then record this process's peak memory."""
    config_path, backbone_dir, run_dir, strategy, fraction, seed, level, error_path, resume = argv
    logging.basicConfig(level=int(level), format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    import torch

    try:
        config = load_config(FinetuneConfig, config_path)
        kwargs = {"strategy": strategy, "seed": int(seed), "train_fraction": float(fraction)}
        done = run_finetune(config, backbone_dir, out=run_dir, resume=bool(int(resume)), **kwargs)
    except PeterRecError as exc:
        Path(error_path).write_text(str(exc), encoding="utf-8")
        sys.exit(2)
    except Exception as exc:  # a bug, not a user error: report it, with the traceback on stderr
        traceback.print_exc()
        message = f"{run_dir}: the finetune process failed with {type(exc).__name__}: {exc}"
        Path(error_path).write_text(message, encoding="utf-8")
        sys.exit(1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    usage = {"peak_rss_mb": rss / (1024 * 1024 if sys.platform == "darwin" else 1024), "peak_cuda_mb": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        usage["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    ckpt.atomic_write_json(Path(done) / USAGE_FILE, usage)


def interrupted_run(staging: Path) -> bool:
    """Whether an interrupted run is there to resume. A run of ours that stopped before its first resume
    point is removed (nothing in it can be continued); a folder peterrec did not make is refused, never
    deleted."""
    if not staging.exists():
        return False
    if not ckpt.is_own_run(staging):
        raise CheckpointError(
            f"{staging}: is in the way and was not made by peterrec; it is left untouched: "
            "move it away, or pass another --out"
        )
    if (staging / "last.pt").is_file():
        return True
    logger.info("removing %s: it stopped before its first resume point", staging)
    ckpt.discard_run_dir(staging)
    return False


def run_identity(resolved: FinetuneConfig) -> str:
    """What makes two runs the same: the resolved config without ``strategy.lr`` and without the options that
    do not act on its strategy (:func:`without_inert_options`, applied to runs saved before it too). A run's
    own lr is already in ``train.lr``, so changing another strategy's entry in the per-strategy table does not
    make it stale."""
    strategy = without_inert_options(dataclasses.replace(resolved.strategy, lr={}))
    return dump_config(dataclasses.replace(resolved, strategy=strategy))


def saved_config_is(run_dir: Path, expected: str) -> bool:
    """Whether the run's saved config means ``expected`` (a :func:`run_identity`): both read with today's
    loader, so a run saved before a key was added (and so without it, at its default) still counts as the same
    config."""
    try:
        saved = load_config(FinetuneConfig, run_dir / "config.yaml")
    except PeterRecError:
        return False
    return run_identity(saved) == expected


def ensure_run(
    config: FinetuneConfig, backbone: Backbone, spec: RunSpec, run_dir: Path, threads: int | None = None
) -> RunRecord:
    """Reuse a finished run made from the same config and backbone; otherwise run it afresh."""
    config = spec_config(config, spec)
    expected = run_identity(
        resolve_overrides(config, split_strategy(spec.strategy)[0], spec.seed, spec.fraction)
    )
    if run_dir.is_dir():
        manifest = read_manifest(run_dir)
        if not saved_config_is(run_dir, expected) or manifest.base.sha256 != backbone.sha256:
            raise CheckpointError(
                f"{run_dir}: a finished run from another config or backbone is there; "
                "delete it or pass another --out"
            )
        logger.info("reusing %s", run_dir)
    else:
        resume = interrupted_run(ckpt.partial_dir(run_dir))
        logger.info("%s %s", "resuming" if resume else "finetuning", spec.name())
        run_in_process(config, backbone.path, spec, run_dir, resume, threads)
        manifest = read_manifest(run_dir)
    per_user = json.loads((run_dir / PER_USER_FILE).read_text(encoding="utf-8"))
    usage_path = run_dir / USAGE_FILE
    usage = json.loads(usage_path.read_text(encoding="utf-8")) if usage_path.is_file() else {}
    return RunRecord(spec, run_dir, manifest, per_user, usage)


def ensure_runs(
    config: FinetuneConfig,
    backbones: Mapping[str | None, Backbone],
    specs: list[RunSpec],
    runs_dir: Path,
    jobs: int = 1,
) -> list[RunRecord]:
    """:func:`ensure_run` for every spec (its backbone ``backbones[spec.backbone]``), ``jobs`` (>= 1) at a
    time, whichever backbone they finetune; records in the order of ``specs``."""
    if jobs == 1:
        return [
            ensure_run(config, backbones[spec.backbone], spec, runs_dir / spec.relative_dir())
            for spec in specs
        ]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads that wait on the run processes
        futures = [
            pool.submit(
                ensure_run,
                config,
                backbones[spec.backbone],
                spec,
                runs_dir / spec.relative_dir(),
                threads,
            )
            for spec in specs
        ]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()  # runs not started yet; the ones running finish (and are reused later)
            raise


# ---------------------------------------------------------------------------------------- summarising


def pick_lrs(records: list[RunRecord], monitor: str) -> dict[tuple[float, str], float | None]:
    """Per (fraction, strategy), the lr with the best mean validation ``monitor`` over seeds."""
    sign = -1.0 if lower_is_better(monitor) else 1.0
    scores: dict[tuple[float, str], dict[float | None, list[float]]] = {}
    for r in records:
        if monitor not in r.manifest.metrics:
            raise ConfigError(f"train.monitor '{monitor}' is not among the metrics of {r.run_dir}")
        key = (r.spec.fraction, r.spec.strategy)
        scores.setdefault(key, {}).setdefault(r.spec.lr, []).append(r.manifest.metrics[monitor])
    return {key: max(by_lr, key=lambda lr: sign * np.mean(by_lr[lr])) for key, by_lr in scores.items()}


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; None for a single seed, where it is undefined)."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "values": v.tolist(),
    }


def main_metric(manifest: FinetuneManifest, columns: list[str]) -> tuple[str, str]:
    """(table column, metric name) of the metric the confidence intervals are computed on."""
    return task_class(manifest.task_type).main_metric(columns)


def metric_name(column: str) -> str:
    """``test/sampled99_hr@10`` -> ``hr@10``: the metric a table column shows."""
    return column.split("/", 1)[1].removeprefix("sampled99_")


def pooled_by_seed(runs: list[RunRecord], baseline: str | None = None) -> list[UserOutputs]:
    """Per seed, the test outputs of its runs pooled over cross-validation folds (one run without folds);
    with ``baseline``, that baseline's outputs instead (identical across seeds: the first seed's)."""
    seeds = sorted({r.spec.seed for r in runs})
    if baseline is not None:
        seeds = seeds[:1]
    pooled = []
    for seed in seeds:
        folds = sorted((r for r in runs if r.spec.seed == seed), key=lambda r: r.spec.fold or 0)
        outputs = [r.outputs(baseline) for r in folds]
        pooled.append(outputs[0] if folds[0].spec.fold is None else pool_folds(outputs))
    return pooled


def backbone_share(manifest: FinetuneManifest) -> float | None:
    """Trainable parameters outside the head, as a % of the pretrained model (item tables included)."""
    p = manifest.parameters
    if "head" not in p or not p.get("pretrained"):
        return None  # runs written before 0.2.0 did not record the split
    return 100.0 * (p["trainable"] - p["head"]) / p["pretrained"]


def column_stats(pooled: list[UserOutputs], columns: list[str]) -> dict[str, dict]:
    """Each column's mean ± std over seeds, every seed's value computed on its pooled test users."""
    summaries = [outputs.summary() for outputs in pooled]
    return {
        c: mean_std([s[metric_name(c)] for s in summaries]) for c in columns if metric_name(c) in summaries[0]
    }


def paired_ci(pooled: list[UserOutputs], reference: list[UserOutputs] | None, metric: str) -> dict | None:
    if reference is None:
        return None
    diff, low, high = paired_bootstrap_metric_ci(pooled, reference, metric)
    return {"diff": diff, "low": low, "high": high}


def row_name(name: str, label: str | None) -> str:
    """``peterrec [backbone-a]``: a row of one backbone among several; the plain name with one backbone."""
    return name if label is None else f"{name} [{label}]"


def strategy_row(
    runs: list[RunRecord],
    columns: list[str],
    reference: list[UserOutputs] | None,
    key: str,
    name: str,
    method: str,
) -> dict:
    """One strategy's row ``method`` (over its seeds and folds); ``reference`` (the outputs of row ``name``
    per seed) gives the paired CI."""
    first = runs[0]
    rss = [r.usage["peak_rss_mb"] for r in runs if r.usage.get("peak_rss_mb") is not None]
    cuda = [r.usage["peak_cuda_mb"] for r in runs if r.usage.get("peak_cuda_mb") is not None]
    pooled = pooled_by_seed(runs)
    return {
        "method": method,
        "train_fraction": first.spec.fraction,
        "lr": first.manifest.lr,
        "seeds": sorted({r.spec.seed for r in runs}),
        "metrics": column_stats(pooled, columns),
        "trainable": first.manifest.parameters["trainable"],
        "backbone_share": backbone_share(first.manifest),
        "stored_bytes": first.manifest.parameters["stored_bytes"],
        "seconds_per_epoch": float(np.mean([r.manifest.seconds_per_epoch or 0.0 for r in runs])),
        "peak_rss_mb": float(np.mean(rss)) if rss else None,
        "peak_cuda_mb": float(np.mean(cuda)) if cuda else None,
        "ci": None if method == name else paired_ci(pooled, reference, key),
        "reference": name,
    }


def baseline_row(
    runs: list[RunRecord],
    baseline: str,
    columns: list[str],
    reference: list[UserOutputs] | None,
    key: str,
    name: str,
    method: str,
) -> dict:
    """One of the task's simple baselines as recorded by ``runs`` (identical across their seeds)."""
    pooled = pooled_by_seed(runs, baseline)
    return {
        "method": method,
        "train_fraction": runs[0].spec.fraction,
        "baseline": True,
        "metrics": column_stats(pooled, columns),
        "ci": None if method == name else paired_ci(pooled, reference, key),
        "reference": name,
    }


def backbone_free(baseline: str, runs_by_backbone: Mapping[str | None, list[RunRecord]]) -> bool:
    """Whether a baseline's per-user test outputs are the same whichever backbone's runs recorded them."""
    outputs = [[r.per_user["baselines"].get(baseline) for r in runs] for runs in runs_by_backbone.values()]
    return all(other == outputs[0] for other in outputs[1:])


def check_same_users(runs_by_backbone: Mapping[str | None, list[RunRecord]]) -> None:
    """Rows of several backbones are paired user by user: their runs must have tested the same users."""
    first, *others = runs_by_backbone.values()
    for runs in others:
        for mine, theirs in zip(first, runs, strict=True):
            if mine.per_user.get("users") != theirs.per_user.get("users"):
                raise ConfigError(
                    f"{mine.run_dir} and {theirs.run_dir}: tested different users, but rows of several "
                    "backbones are compared user by user; pass backbones that keep the same users of the task"
                )


def reference_row(reference: str, names: Sequence[str], first: str | None) -> str:
    """The row that ``--reference`` names. With several backbones (``first``: the first one's label) a plain
    name means the first backbone's row, and a labelled baseline shown once (the same for every backbone)
    means that one row."""
    if reference in names or first is None:
        return reference
    if row_name(reference, first) in names:
        return row_name(reference, first)
    plain = reference.rsplit(" [", 1)[0]
    return plain if plain in names else reference


def build_rows(
    records: list[RunRecord],
    strategies: list[str],
    fractions: list[float],
    monitor: str,
    reference: str = REFERENCE,
) -> list[dict]:
    """Per fraction, a row per strategy (and backbone), then the task's baselines: once each, or once per
    backbone for a baseline whose per-user test outputs differ between backbones. Each row's ``reference``
    is the row name that ``reference`` stands for; with several backbones each row names its ``backbone``
    (None: a baseline shown once)."""
    columns = primary_columns(records[0].manifest.metrics)
    _, key = main_metric(records[0].manifest, columns)
    labels = list(dict.fromkeys(r.spec.backbone for r in records))
    picked: dict[tuple[float, str | None, str], list[RunRecord]] = {}
    for label in labels:  # each backbone's lr is picked on its own runs
        mine = [r for r in records if r.spec.backbone == label]
        chosen = pick_lrs(mine, monitor)
        for fraction in fractions:
            for s in strategies:
                lr = chosen[(fraction, s)]
                picked[fraction, label, s] = [
                    r for r in mine if r.spec[:2] == (s, fraction) and r.spec.lr == lr
                ]
    # Every run records the baselines; those of the first strategy's runs stand for each backbone's.
    recorded = {f: {label: picked[f, label, strategies[0]] for label in labels} for f in fractions}
    # In task order, those of any backbone: a content backbone records rows (zero_shot, content_knn) that an
    # ID backbone has not; such a row appears for the backbones that recorded it.
    baselines = list(dict.fromkeys(b for r in records for b in r.per_user.get("baselines", {})))
    shared = {b for b in baselines if all(backbone_free(b, recorded[f]) for f in fractions)}
    has = {
        (b, label): b in recorded[fractions[0]][label][0].per_user.get("baselines", {})
        for b in baselines
        for label in labels
    }
    rows = []
    for fraction in fractions:
        check_same_users(recorded[fraction])
        sources = {  # row name -> (backbone label, runs, baseline or None for the runs' own outputs)
            row_name(s, label): (label, picked[fraction, label, s], None)
            for s in strategies
            for label in labels
        }
        for b in baselines:
            for label in labels[:1] if b in shared else [label for label in labels if has[b, label]]:
                name = b if b in shared else row_name(b, label)
                sources[name] = (None if b in shared else label, recorded[fraction][label], b)
        name = reference_row(reference, list(sources), labels[0])
        against = pooled_by_seed(*sources[name][1:]) if name in sources else None
        for method, (label, runs, baseline) in sources.items():
            if baseline is None:
                row = strategy_row(runs, columns, against, key, name, method)
            else:
                row = baseline_row(runs, baseline, columns, against, key, name, method)
            rows.append(row if labels == [None] else {"method": method, "backbone": label, **row})
    return rows


def check_reference(
    reference: str, strategies: Sequence[str], task_type: str, labels: Sequence[str] = ()
) -> None:
    """The reference row must be one of the strategies run or one of the task's baselines, with several
    backbones (``labels``) also ``NAME [LABEL]``. The default (peterrec) may be absent, and then the table
    has no CI column."""
    baselines = task_class(task_type).baseline_names
    names = [*strategies, *baselines]
    if (
        reference == REFERENCE
        or reference in names
        or reference in {row_name(n, b) for n in names for b in labels}
    ):
        return
    labelled = f"; or NAME [LABEL] with a backbone label of {', '.join(labels)}" if labels else ""
    raise ConfigError(
        f"--reference: '{reference}' is neither among --strategies ({', '.join(strategies)}) nor a baseline "
        f"of task {task_type} ({', '.join(baselines)}){labelled}"
    )


# ---------------------------------------------------------------------------------------- presenting


def describe_measurement(
    records: list[RunRecord],
    fractions: list[float],
    main: str,
    lr_grid,
    reference: str = REFERENCE,
    has_reference: bool = True,
    backbones: Sequence[Backbone] = (),
) -> str:
    """The line under the table: task, (several) backbones, split sizes, seeds, protocol, and what the cost
    columns mean."""
    task = records[0].manifest.task
    folds = sorted({r.spec.fold for r in records if r.spec.fold is not None})
    sizes = []
    for fraction in fractions:
        info = next(
            r.manifest.task for r in records if r.spec.fraction == fraction and r.spec.fold in (None, 0)
        )
        users = [str(info[s]["users"]) for s in ("train", "valid", "test") if s in info]
        split = f"train/valid/test users {'/'.join(users)}" if users else f"{info.get('users')} users"
        if folds:
            tested = len({u for r in records if r.spec.fraction == fraction for u in r.per_user["users"]})
            fold0 = split.replace("users", "users of fold 0")
            split = f"{tested} test users over {len(folds)} folds ({fold0})"
        sizes.append(f"{split} at train fraction {fraction:g}")
    protocol = task_class(task["type"]).protocol(task)
    seeds = sorted({r.spec.seed for r in records})
    several = len(backbones) > 1
    per = "strategy and backbone" if several else "strategy"
    lr = f"lr picked per {per} on mean {lr_grid[1]} from {lr_grid[0]}" if lr_grid else "lr from the config"
    named = ", ".join(f"{b.label} = {b.path} (weights sha256 {b.sha256[:12]})" for b in backbones)
    named = f"backbones {named}; " if several else ""
    cv = (
        " Cross-validation over users: every user is tested once, in one fold; each seed's predictions are "
        "pooled over the folds and its metrics computed on all of them."
        if folds
        else ""
    )
    ci = (
        f" CI = paired bootstrap 95% CI over users of (row − {reference}) on {main}: each resample draws "
        "users with replacement and recomputes the metric for every seed, the difference is of the "
        "seed means. Backbone % = trainable parameters outside the head as a share of the pretrained model, "
        "item tables included."
    )
    return (
        f"Measured: task {task['type']}; {named}{'; '.join(sizes)}; protocol {protocol}; "
        f"mean ± std (ddof=1) over seeds {seeds}; {lr}.{cv} Peak RSS = peak resident memory of each run's "
        f"own process, torch runtime included.{ci if has_reference else ''}"
    )


def run_compare(
    config: FinetuneConfig,
    backbone_dir: str | Path | Sequence[str | Path],
    strategies: Sequence[str] = CLASSIC_STRATEGIES,
    seeds: int | Sequence[int] = 3,
    train_fractions: Sequence[float] = (1.0,),
    lr_grid: Sequence[float] | None = None,
    out: str | Path | None = None,
    plot: str | Path | None = None,
    reference: str = REFERENCE,
    jobs: int = 1,
) -> CompareResult:
    """Finetune every strategy x seed x fraction (x lr) in its own process; write and return the table.

    ``backbone_dir``: a pretrain run, or several: then every run is made on each, its rows are named
    ``strategy [label]`` (label: the run directory's name, or as much of its path as tells it apart) and its
    run directories go under ``<out>/runs/<label>/``. ``seeds``: a count (``train.seed``, ``train.seed + 1``,
    ...) or explicit seeds. Run directories go to ``<out>/runs/<strategy>-f<fraction>-s<seed>[-lr<lr>]``;
    finished ones with a matching config are reused. Paired confidence intervals compare every row with the
    ``reference`` row: a strategy or a baseline (with several backbones, either may be ``NAME [LABEL]``; a
    plain name means the first backbone's).
    With ``task.folds: K`` every run is repeated for each fold and the folds' test users are pooled.
    ``jobs``: how many runs train at once, the CPU cores shared out among them (their timings then include
    the contention).
    """
    parse_strategies(",".join(strategies))  # the command line's checks, for Python callers too
    parse_float_list(",".join(map(str, train_fractions)), "--train-fraction", upper=1.0)
    parse_float_list(",".join(map(str, lr_grid or [1])), "--lr-grid")
    seed_list = [config.train.seed + i for i in range(seeds)] if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ConfigError("--seeds: need at least one seed")
    if jobs < 1:
        raise ConfigError(f"--jobs: need at least 1, got {jobs}")
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ConfigError(f"--plot: expected a .png file name, got {plot}")
    paths = [backbone_dir] if isinstance(backbone_dir, str | os.PathLike) else list(backbone_dir)
    if not paths:
        raise ConfigError("--backbone: need at least one pretrain run directory")
    labels = backbone_labels(paths)
    several = len(paths) > 1
    out = Path(out) if out else Path("checkpoints") / f"compare-{config.name}-{config.task.type}"
    lrs = list(lr_grid) if lr_grid else [None]
    folds = list(range(config.task.folds)) if config.task.folds > 1 else [None]
    check_reference(reference, strategies, config.task.type, labels if several else ())
    backbones = [read_backbone(Path(path), label) for path, label in zip(paths, labels, strict=True)]
    by_label = {(b.label if several else None): b for b in backbones}  # by RunSpec.backbone
    specs = [
        RunSpec(strategy, fraction, seed, lr, fold, label)
        for label in by_label
        for fraction in train_fractions
        for strategy in strategies
        for lr in lrs
        for seed in seed_list
        for fold in folds
    ]
    records = ensure_runs(config, by_label, specs, out / "runs", jobs)
    monitor = resolve_monitor(config)
    rows = build_rows(records, list(strategies), list(train_fractions), monitor, reference)
    columns = primary_columns(records[0].manifest.metrics)
    main, _ = main_metric(records[0].manifest, columns)
    reference = rows[0]["reference"]  # the row name it stands for (with several backbones)
    has_reference = any(r["method"] == reference for r in rows)
    table = render_table(rows, columns, main, list(train_fractions), reference if has_reference else None)
    grid = (lrs, monitor) if lr_grid else None
    note = describe_measurement(
        records, list(train_fractions), main, grid, reference, has_reference, backbones
    )
    text = f"{table}\n\n{note}"
    described = [{"label": b.label, "path": str(b.path), "sha256": b.sha256} for b in backbones]
    write_outputs(out, text, rows, columns, described if several else None)
    plotted = plot_results(rows, main, list(train_fractions), Path(plot)) if plot else None
    return CompareResult(out, text, rows, records, plotted)


@click.command()
@config_option
@click.option(
    "--backbone",
    "backbones",
    type=click.Path(),
    multiple=True,
    required=True,
    help="A pretrain run directory; repeat it to compare backbones (rows 'strategy [label]').",
)
@click.option("--strategies", default="all", show_default=True, help="'all' or a comma list of strategies.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds per run (train.seed, +1, ...).")
@click.option("--train-fraction", "train_fractions", default="1.0", show_default=True, help="e.g. 0.1,1.0")
@click.option("--lr-grid", default=None, help="e.g. 1e-3,3e-4: pick each strategy's lr on validation.")
@click.option(
    "--jobs", type=int, default=1, show_default=True, help="Runs trained at once (CPU cores shared out)."
)
@set_option
@click.option("--out", type=click.Path(), default=None, help="Default checkpoints/compare-<config>-<task>.")
@click.option("--plot", type=click.Path(), default=None, help="Also draw the main metric to this PNG.")
@click.option(
    "--reference",
    default=None,
    help=f"The row the paired CIs compare with: a strategy or a baseline, 'NAME [LABEL]' with several "
    f"backbones (default {REFERENCE} of the first backbone, when run).",
)
def command(
    config_path, backbones, strategies, seeds, train_fractions, lr_grid, jobs, overrides, out, plot, reference
) -> None:
    """Finetune several strategies x seeds (x train fractions, x backbones), each in its own process; one
    table."""
    try:
        backbone_labels(backbones)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    names = parse_strategies(strategies)
    fractions = parse_float_list(train_fractions, "--train-fraction", upper=1.0)
    grid = parse_float_list(lr_grid, "--lr-grid") if lr_grid is not None else None
    if seeds < 1:
        raise ConfigError(f"--seeds: need at least 1, got {seeds}")
    config = load_config(FinetuneConfig, config_path, list(overrides))
    out = out or str(Path("checkpoints") / f"compare-{Path(config_path).stem}-{config.task.type}")
    result = run_compare(
        config, list(backbones), names, seeds, fractions, grid, out, plot, reference or REFERENCE, jobs
    )
    click.echo(result.table)
    click.echo(f"\nwrote {result.out}/results.md, results.csv, results.json" + (f", {plot}" if plot else ""))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
