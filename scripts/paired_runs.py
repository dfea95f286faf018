"""Paired bootstrap CI between two sets of cross-validated runs that one ``compare`` table cannot hold.

Usage: python scripts/paired_runs.py METRIC RUNS_A STRATEGY_A RUNS_B STRATEGY_B [SEEDS]   (docs/results.md)

``RUNS_A`` and ``RUNS_B`` are the ``runs/`` folders of two ``compare --out`` directories, for instance one per
backbone: ``compare`` keys its runs by config and backbone, so the same strategy on two backbones never
shares a table. Every seed of ``STRATEGY`` found there (``{strategy}-f{fraction}-s{seed}-k{fold}``) is pooled
over its folds (``STRATEGY`` is ``name`` for train fraction 1, or ``name@FRACTION`` as the run names spell it,
e.g. ``peterrec@0.1``), both sides must cover the same users, and the difference A − B of the seed means of
``METRIC`` (``auc``, ``macro_f1``, ``accuracy``, ``log_loss``) gets the paired bootstrap CI over users that
``compare`` reports.
``SEEDS`` (e.g. ``0`` or ``0,1``) keeps only those seeds on both sides. Prints each side's seed-mean of the
metric on test and of the validation log losses, then the difference.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from peterrec.evaluation.user_results import UserOutputs, paired_bootstrap_metric_ci, pool_folds

RUN_NAME = re.compile(r"(?P<strategy>.+)-f(?P<fraction>[^-]+)-s(?P<seed>\d+)-k(?P<fold>\d+)$")
VALID_SCORES = ("valid/log_loss", "valid/balanced_log_loss")


def runs_by_seed(runs: Path, strategy: str, keep: set[int] | None) -> dict[int, list[Path]]:
    """The finished fold runs of ``strategy`` under ``runs``, grouped by seed (only ``keep``'s, if given)."""
    name, _, fraction = strategy.partition("@")
    seeds: dict[int, list[Path]] = {}
    for run in sorted(runs.iterdir()):
        match = RUN_NAME.match(run.name)
        if not match or (match["strategy"], match["fraction"]) != (name, fraction or "1"):
            continue
        if not (run / "test_per_user.json").exists():
            continue
        seed = int(match["seed"])
        if keep is None or seed in keep:
            seeds.setdefault(seed, []).append(run)
    if not seeds:
        raise SystemExit(f"no finished runs of {strategy!r} under {runs}")
    return seeds


def pooled_outputs(folds: list[Path]) -> UserOutputs:
    outputs = [UserOutputs.from_json(json.loads((f / "test_per_user.json").read_text())) for f in folds]
    return pool_folds(outputs)


def mean_valid(folds: list[Path]) -> dict[str, float]:
    metrics = [json.loads((f / "manifest.json").read_text())["metrics"] for f in folds]
    return {k: float(np.mean([m[k] for m in metrics])) for k in VALID_SCORES if k in metrics[0]}


def describe(label: str, seeds: dict[int, list[Path]], metric: str) -> list[UserOutputs]:
    pooled = [pooled_outputs(seeds[s]) for s in sorted(seeds)]
    test = np.mean([p.metric(metric)[0] for p in pooled])
    per_seed = [mean_valid(seeds[s]) for s in sorted(seeds)]
    valid = {k: np.mean([scores[k] for scores in per_seed]) for k in per_seed[0]}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in valid.items())
    print(f"{label}: seeds {sorted(seeds)}, test/{metric} {test:.4f} (pooled per seed, mean); {shown}")
    return pooled


def main(argv: list[str]) -> None:
    if len(argv) not in (5, 6):
        raise SystemExit(__doc__)
    metric, runs_a, strategy_a, runs_b, strategy_b = argv[:5]
    keep = {int(s) for s in argv[5].split(",")} if len(argv) == 6 else None
    a = describe(f"A {runs_a} {strategy_a}", runs_by_seed(Path(runs_a), strategy_a, keep), metric)
    b = describe(f"B {runs_b} {strategy_b}", runs_by_seed(Path(runs_b), strategy_b, keep), metric)
    diff, low, high = paired_bootstrap_metric_ci(a, b, metric)
    interval = f"[{low:+.4f}, {high:+.4f}]"
    print(f"A - B on test/{metric}: {diff:+.4f} {interval} (paired bootstrap 95% CI over users)")


if __name__ == "__main__":
    main(sys.argv[1:])
