"""The item-table patch on ML-100K profiles (docs/results.md): peterrec with and without ``item_lora``.

Usage: python scripts/item_rank_ablation.py OUT TASK [TASK ...]   (run by scripts/ml100k_study.sh)

For each task, ``peterrec compare`` runs peterrec on the five folds of the shipped config with
``strategy.item_rank`` set to 0 (PeterRec's patches alone, as the paper) and to each rank of RANKS, for SEEDS,
at the settings these tables were measured at (THEN: patches in every block; age on the newest 49 clicks; no
length scale, lr 1e-3, stopping on the log loss), into OUT/TASK-item-rank-RANK; scripts/patch_ablation.py
measures the settings shipped since. Each row is compared with the shipped rank on the same users (paired
bootstrap over users of the task's main metric, per-seed means), and the mean validation log loss over folds
and seeds is shown beside it: it is what a choice of rank may look at. Written to OUT/item-rank-TASK.md.
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
RANKS = (0, 8)  # the paper's setting and the shipped one; scripts/ml100k_study.sh adds a rank sweep on gender
LATER_OFF = ["strategy.length_scale=false", "strategy.lr.peterrec=1e-3", "train.monitor=valid/log_loss"]
THEN = {
    "gender": ["adapter.layers=all", *LATER_OFF],
    "age": ["adapter.layers=all", "data.max_len=50", *LATER_OFF],
}
SEEDS = (0, 1, 2)


def config_path(task: str) -> Path:
    return ROOT / "configs" / "finetune" / f"ml100k_{task}.yaml"


def runs_for(out: Path, task: str, rank: int, seeds, extra: list[str]):
    """peterrec's runs at ``rank``, at the settings of THEN."""
    overrides = [*QUIET, *THEN.get(task, []), *extra, f"strategy.item_rank={rank}"]
    suffix = "-".join(x.replace("=", "").replace("data.", "") for x in extra)
    where = out / f"{task}-item-rank-{rank}{suffix}"
    config = load_config(FinetuneConfig, config_path(task), overrides)
    result = run_compare(config, out / "backbone-all", ["peterrec"], list(seeds), out=where, jobs=2)
    return [r for r in result.records if r.spec.strategy == "peterrec"]


def ablate(out: Path, task: str, ranks=RANKS, seeds=SEEDS, extra: list[str] = ()) -> str:
    shipped = load_config(FinetuneConfig, config_path(task)).strategy.item_rank
    ranks = sorted({*ranks, shipped})
    runs = {rank: runs_for(out, task, rank, seeds, list(extra)) for rank in ranks}
    records = runs[shipped]
    columns = primary_columns(records[0].manifest.metrics)
    main, key = main_metric(records[0].manifest, columns)
    reference = pooled_by_seed(records)
    rows = []
    for rank, these in runs.items():
        pooled = pooled_by_seed(these)
        value = np.mean([p.summary()[key] for p in pooled])
        ci = "reference"
        if rank != shipped:
            diff, low, high = paired_bootstrap_metric_ci(pooled, reference, key)
            ci = f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"
        valid = np.mean([r.manifest.metrics["valid/log_loss"] for r in these])
        trainable = these[0].manifest.parameters["trainable"]
        epochs = np.mean([r.manifest.best_epoch for r in these])
        rows.append([rank, f"{trainable:,}", f"{value:.4f}", ci, f"{valid:.4f}", f"{epochs:.1f}"])
    header = ["item_rank", "trainable params", main, f"Δ {main} vs item_rank {shipped} (95% CI)"]
    header += ["mean valid/log_loss", "best epoch"]
    changed = "".join(f"; {x}" for x in [*THEN.get(task, []), *extra])
    note = (
        f"peterrec, seeds {list(seeds)}, 5-fold cross-validation over all {len(reference[0])} users "
        f"(predictions pooled over folds, metric averaged over seeds){changed}; "
        "CI = paired bootstrap over users."
    )
    return f"{markdown_table(header, rows)}\n\n{note}\n"


def main(argv: list[str]) -> None:
    out, tasks = Path(argv[0]), argv[1:]
    for task in tasks:
        text = ablate(out, task)
        (out / f"item-rank-{task}.md").write_text(text, encoding="utf-8")
        print(text, flush=True)
    if "gender" in tasks:  # the rank, on the short window (seed 0): cheap enough to sweep
        text = ablate(out, "gender", ranks=(0, 1, 4, 8, 16), seeds=(0,), extra=["data.max_len=50"])
        (out / "item-rank-gender-sweep.md").write_text(text, encoding="utf-8")
        print(text, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
