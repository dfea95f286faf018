"""Where the patches go, and the length scale, on ML-100K profiles (docs/results.md "Where the patches go"):
peterrec against one change at a time.

Usage: python scripts/patch_ablation.py OUT TASK [TASK ...]   (run by scripts/ml100k_study.sh)

The gender and age configs patch the last residual block only, read the whole history and (since the
variants were measured) scale the user vector by the history's length; age also stops on the balanced log
loss since then, and peterrec's lr was re-chosen last (LR_THEN: the lr every earlier row ran at). Each table's
first row is the config before the length scale, and the variants of the patches change one setting of it (or
try a neighbour), as they were measured; the last rows are the lr grid, ending with the shipped config
(OUT/TASK, the main table's seed-0 runs). Each runs peterrec with seed 0 on the five folds and is
compared with the first row on the same users: paired
bootstrap over users of the task's main metric. Beside it: the mean over folds of the validation main metric
and log loss, which is what a choice among the variants may look at (the test users play no part in it).
Written to OUT/patches-TASK.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from peterrec.commands.compare import main_metric, pooled_by_seed, run_compare
from peterrec.config import FinetuneConfig, load_config
from peterrec.evaluation.user_results import paired_bootstrap_metric_ci
from peterrec.reporting import markdown_table, primary_columns

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["train.progress=false"]
LR_THEN = ["strategy.lr.peterrec=1e-3"]  # peterrec's lr until it was re-chosen (the last rows)
BEFORE = [*LR_THEN, "strategy.length_scale=false"]  # the config the patch variants were measured on
AGE_BEFORE = [*BEFORE, "train.monitor=valid/log_loss"]  # age also stopped on the plain log loss then
# task -> {row label: overrides of the shipped config}; the first row is the reference
VARIANTS = {
    "gender": {
        "patch in block 7, no length scale (the config before)": BEFORE,
        "adapter.layers: all (the paper: every block)": [*BEFORE, "adapter.layers=all"],
        "adapter.layers: [6, 7]": [*BEFORE, "adapter.layers=[6,7]"],
        "strategy.item_rank: 16": [*BEFORE, "strategy.item_rank=16"],
        "task.click_dropout: 0.3": [*BEFORE, "task.click_dropout=0.3"],
        "strategy.length_scale: true, lr 1e-3": LR_THEN,
        "strategy.length_scale: true, lr 3e-3": ["strategy.lr.peterrec=3e-3"],
        "strategy.length_scale: true, lr 3e-4 (the shipped config)": [],
    },
    "age": {
        "patch in block 7, 799 clicks, no length scale, valid/log_loss (the config before)": AGE_BEFORE,
        "adapter.layers: all (the paper: every block)": [*AGE_BEFORE, "adapter.layers=all"],
        "data.max_len: 50 (the newest 49 clicks)": [*AGE_BEFORE, "data.max_len=50"],
        "both: every block, 49 clicks": [*AGE_BEFORE, "adapter.layers=all", "data.max_len=50"],
        "strategy.length_scale: true, stopping on valid/log_loss": [*LR_THEN, "train.monitor=valid/log_loss"],
        "length scale, stopping on valid/balanced_log_loss, lr 3e-4": ["strategy.lr.peterrec=3e-4"],
        "length scale, stopping on valid/balanced_log_loss, lr 3e-3": ["strategy.lr.peterrec=3e-3"],
        "length scale, stopping on valid/balanced_log_loss, lr 1e-3 (the shipped config)": [],
    },
}


def slug(overrides: list[str]) -> str:
    """A directory name for a list of overrides: adapter.layers=[6,7] -> layers6,7."""
    parts = []
    for override in overrides:
        key, value = override.split("=", 1)
        parts.append(key.split(".")[-1] + value.strip("[]").replace("/", "_"))
    return "-".join(parts)


def variant_runs(out: Path, task: str, overrides: list[str]):
    """peterrec's seed-0 runs with ``overrides`` (the main table's, OUT/TASK, for the shipped config)."""
    where = out / task if not overrides else out / f"{task}-patch-{slug(overrides)}"
    path = ROOT / "configs" / "finetune" / f"ml100k_{task}.yaml"
    config = load_config(FinetuneConfig, path, [*QUIET, *overrides])
    result = run_compare(config, out / "backbone-all", ["peterrec"], [0], out=where, jobs=2)
    return [r for r in result.records if r.spec.strategy == "peterrec" and r.spec.seed == 0]


def ablate(out: Path, task: str) -> str:
    runs = {label: variant_runs(out, task, overrides) for label, overrides in VARIANTS[task].items()}
    first = next(iter(runs.values()))
    columns = primary_columns(first[0].manifest.metrics)
    main, key = main_metric(first[0].manifest, columns)
    reference = pooled_by_seed(first)
    rows = []
    for label, these in runs.items():
        pooled = pooled_by_seed(these)
        ci = "reference"
        if these is not first:
            diff, low, high = paired_bootstrap_metric_ci(pooled, reference, key)
            ci = f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"
        valid = [np.mean([r.manifest.metrics[f"valid/{m}"] for r in these]) for m in (key, "log_loss")]
        trainable = these[0].manifest.parameters["trainable"]
        epochs = np.mean([r.manifest.best_epoch for r in these])
        seconds = np.mean([r.manifest.seconds_per_epoch or 0.0 for r in these])
        rows.append(
            [label, f"{trainable:,}", f"{pooled[0].summary()[key]:.4f}", ci, f"{valid[0]:.4f}"]
            + [f"{valid[1]:.4f}", f"{epochs:.1f}", f"{seconds:.2f}"]
        )
    header = ["peterrec variant", "trainable params", main, f"Δ {main} vs the first row (95% CI)"]
    header += [f"mean valid/{key}", "mean valid/log_loss", "best epoch", "s/epoch"]
    note = (
        f"peterrec, seed 0, 5-fold cross-validation over all {len(reference[0])} users (predictions pooled "
        "over folds); CI = paired bootstrap over users; valid = mean over the five folds' validation users."
    )
    return f"{markdown_table(header, rows)}\n\n{note}\n"


def main(argv: list[str]) -> None:
    out, tasks = Path(argv[0]), argv[1:]
    for task in tasks:
        text = ablate(out, task)
        (out / f"patches-{task}.md").write_text(text, encoding="utf-8")
        print(text, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
