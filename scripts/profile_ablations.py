"""Ablations of the profile-prediction options on ML-100K (docs/results.md): each option changed alone.

Usage: python scripts/profile_ablations.py OUT TASK [TASK ...]   (run by scripts/ml100k_study.sh)

For each task (gender, age) and each variant, ``peterrec compare`` runs peterrec and fine_all with seed 0 on
the five folds of the shipped config with that one option changed. The tables were measured before the item-
table patch and (on gender) the whole-history window shipped, so every run here keeps the settings of then
(BASE: the newest 49 clicks, ``strategy.item_rank: 0``, patches in every block); scripts/item_rank_ablation.py
measures the patch. Every variant is compared with the default on the same users (paired bootstrap over users
of the task's main metric) and written to OUT/ablations-TASK.md.
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
STRATEGIES = ("peterrec", "fine_all")
QUIET = ["train.progress=false"]
# the defaults when these ablations were measured (later options off, the lrs and stopping score of then)
BASE = ["data.max_len=50", "strategy.item_rank=0", "adapter.layers=all", "strategy.length_scale=false"]
BASE += ["strategy.lr.peterrec=1e-3", "strategy.lr.fine_all=3e-3", "train.monitor=valid/log_loss"]
# name -> (what changes, config overrides); the longest ML-100K history has 737 clicks
VARIANTS = {
    "default": ("the shipped config of then (BASE)", []),
    "history-full": ("task.history: full (windows of 49, vectors averaged)", ["task.history=full"]),
    "one-long-window": ("one window of 799 clicks, mean pooling", ["data.max_len=800"]),
    "pooling-cls_end": ("strategy.pooling: cls_end", ["strategy.pooling=cls_end"]),
    "no-layer-mix": ("strategy.layer_mix: false (top layer only)", ["strategy.layer_mix=false"]),
    "stop-on-accuracy": ("train.monitor: valid/accuracy", ["train.monitor=valid/accuracy"]),
    "class-weights": ("task.class_weights: balanced", ["task.class_weights=balanced"]),
}
# the costly one (16x longer inputs) goes last, so that an interrupted study has the others; on gender only
ORDER = ["default", "no-layer-mix", "pooling-cls_end", "stop-on-accuracy", "class-weights", "history-full"]
LONG = {"gender": ["one-long-window"]}


def variant(name: str, shipped_class_weights: str) -> tuple[str, list[str]]:
    """What a variant changes; the class-weights variant is the other setting than the shipped config's (age
    ships balanced weights since they were measured with every strategy)."""
    if name == "class-weights" and shipped_class_weights == "balanced":
        return ("task.class_weights: none", ["task.class_weights=none"])
    return VARIANTS[name]


def ablate(out: Path, task: str, variants: list[str]) -> str:
    config_path = ROOT / "configs" / "finetune" / f"ml100k_{task}.yaml"
    backbone = out / "backbone-all"
    results = {}
    shipped = load_config(FinetuneConfig, config_path).task.class_weights
    for name in variants:
        overrides = [*QUIET, *BASE, *variant(name, shipped)[1]]
        where = out / f"{task}-ablation-{name}"
        config = load_config(FinetuneConfig, config_path, overrides)
        results[name] = run_compare(config, backbone, STRATEGIES, [0], out=where, jobs=2)
    records = results["default"].records
    columns = primary_columns(records[0].manifest.metrics)
    main, key = main_metric(records[0].manifest, columns)
    rows = []
    for strategy in STRATEGIES:
        default = pooled_by_seed([r for r in records if r.spec.strategy == strategy])
        for name in variants:
            runs = [r for r in results[name].records if r.spec.strategy == strategy]
            pooled = pooled_by_seed(runs)
            value = pooled[0].summary()[key]
            ci = "reference"
            if name != "default":
                diff, low, high = paired_bootstrap_metric_ci(pooled, default, key)
                ci = f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"
            seconds = np.mean([r.manifest.seconds_per_epoch or 0.0 for r in runs])
            rss = np.mean([r.usage.get("peak_rss_mb") or 0.0 for r in runs])
            epochs = np.mean([r.manifest.best_epoch for r in runs])
            what = variant(name, shipped)[0]
            rows.append([strategy, what, value, ci, f"{epochs:.1f}", f"{seconds:.2f}", f"{rss:.0f}"])
    header = [
        "strategy",
        "variant",
        main,
        f"Δ {main} vs default (95% CI)",
        "best epoch",
        "s/epoch",
        "peak RSS MB",
    ]
    note = (
        f"Seed 0, 5-fold cross-validation over all {len(default[0])} users (predictions pooled over folds); "
        "one option changed at a time from the shipped config; CI = paired bootstrap over users."
    )
    return f"{markdown_table(header, rows)}\n\n{note}\n"


def main(argv: list[str]) -> None:
    out, tasks = Path(argv[0]), argv[1:]
    for task in tasks:
        text = ablate(out, task, ORDER + LONG.get(task, []))
        (out / f"ablations-{task}.md").write_text(text, encoding="utf-8")
        print(text, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
