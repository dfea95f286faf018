"""The adapter-family study of docs/adapters.md on MovieLens-100K, end to end, on CPU.

Usage: ``python scripts/adapter_study.py [--out runs/adapter-study] [--quick]``. Needs the ML-100K task files
(``bash scripts/ml100k_study.sh`` makes them, or ``peterrec data movielens``); finished runs are reused.

1. main table (3 seeds): every adapter kind at its default size beside peterrec, fine_all, fine_cls, on
   genre cold start and gender; paired 95% CIs against fine_all;
2. a second size of every kind (3 seeds, cold start; LoRA at two smaller ranks) for the quality-vs-parameters
   (Pareto) plot;
3. layer placement (1 seed, cold start): bottleneck and LoRA on the first half, last half, every other block;
4. scaling (1 seed, cold start): pretrain on 25 / 50 / 100% of the source users (``data.user_fraction``),
   finetune at train fractions 0.1 / 0.3 / 1.0.
Writes ``<out>/summary.md`` (the tables of docs/adapters.md), ``<out>/pareto.png``, ``<out>/scaling.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from peterrec.commands.compare import RunRecord, pooled_by_seed, run_compare
from peterrec.commands.pretrain import run_pretrain
from peterrec.config import AdapterConfig, FinetuneConfig, PretrainConfig, load_config
from peterrec.evaluation.user_results import paired_bootstrap_metric_ci
from peterrec.manifest import read_manifest
from peterrec.reporting import markdown_table

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["train.progress=false"]
# Learning rates per adapter kind (conventional values for each family, not tuned on this data's test users):
# LoRA and bottleneck patches train at the config's 1e-3; biases, LayerNorms and soft prompts move few
# parameters and need larger steps.
KIND_LRS = [
    "strategy.lr.adapter:bitfit=5e-3",
    "strategy.lr.adapter:layernorm=5e-3",
    "strategy.lr.adapter:prompt=1e-2",
]
MAIN = [
    "peterrec",
    "fine_all",
    "fine_cls",
    *(f"adapter:{k}" for k in ("bottleneck", "lora", "bitfit", "layernorm", "prompt")),
]
# a second size per kind: (label, kind, layers, options)
SECOND_SIZES = [
    ("bottleneck r=1/16", "bottleneck", "all", {"ratio": 0.0625}),
    ("lora r=2", "lora", "all", {"rank": 2, "alpha": 4.0}),
    ("lora r=1", "lora", "all", {"rank": 1, "alpha": 2.0}),
    ("prompt k=16", "prompt", "all", {"length": 16}),
    ("bitfit last half", "bitfit", "last_half", {}),
    ("layernorm last half", "layernorm", "last_half", {}),
]
PLACEMENTS = [("bottleneck", {}), ("lora", {})]
LAYERS = ("first_half", "last_half", "every_other")
SOURCE_FRACTIONS = (0.25, 0.5, 1.0)
TRAIN_FRACTIONS = (0.1, 0.3, 1.0)
SCALING_STRATEGIES = ("adapter:lora", "fine_all")


def finetune_config(task: str, overrides: list[str] = ()) -> FinetuneConfig:
    path = ROOT / "configs" / "finetune" / f"ml100k_{task}.yaml"
    return load_config(FinetuneConfig, path, [*QUIET, *KIND_LRS, *overrides])


def with_adapter(config: FinetuneConfig, kind: str, layers, options: dict) -> FinetuneConfig:
    adapter = AdapterConfig.parse({"kind": kind, "layers": layers, **options}, "adapter", "study")
    return dataclasses.replace(config, adapter=adapter)


def pretrained(out: Path, fraction: float) -> Path:
    run = out / f"backbone-source-u{fraction:g}"
    if not (run / "manifest.json").is_file():
        config = load_config(
            PretrainConfig,
            ROOT / "configs" / "pretrain" / "ml100k_source_autoregressive.yaml",
            [*QUIET, f"data.user_fraction={fraction}"],
        )
        run_pretrain(config, out=run)
    return run


def summarise(records: list[RunRecord], reference: list[RunRecord], key: str, column: str) -> dict:
    values = [r.manifest.metrics[column] for r in records]
    p = records[0].manifest.parameters
    diff, low, high = paired_bootstrap_metric_ci(pooled_by_seed(records), pooled_by_seed(reference), key)
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "trainable": p["trainable"],
        "backbone_share": 100.0 * (p["trainable"] - p["head"]) / p["pretrained"],
        "ci": (diff, low, high),
        "seconds_per_epoch": float(np.mean([r.manifest.seconds_per_epoch for r in records])),
    }


def cell(s: dict) -> str:
    return f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if s["std"] is not None else "")


def ci_cell(s: dict) -> str:
    diff, low, high = s["ci"]
    return f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"


def rows_table(summary: dict[str, dict], metric: str) -> str:
    rows = [
        [
            name,
            cell(s),
            f"{s['trainable']:,}",
            f"{s['backbone_share']:.3f}",
            ci_cell(s),
            f"{s['seconds_per_epoch']:.2f}",
        ]
        for name, s in summary.items()
    ]
    header = [
        "method",
        metric,
        "trainable (with head)",
        "backbone % (no head)",
        "Δ vs fine_all (95% CI)",
        "s/epoch",
    ]
    return markdown_table(header, rows)


def by_strategy(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    grouped: dict[str, list[RunRecord]] = {}
    for r in records:
        grouped.setdefault(r.spec.strategy, []).append(r)
    return grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/adapter-study")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    sections: list[str] = []

    def timed(name: str, fn):
        tick = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - tick, 1)
        return result

    source = timed("pretrain 100%", lambda: pretrained(out, 1.0))
    everyone = out / "backbone-all"
    if not (everyone / "manifest.json").is_file():
        config = load_config(
            PretrainConfig, ROOT / "configs" / "pretrain" / "ml100k_autoregressive.yaml", QUIET
        )
        timed("pretrain all users", lambda: run_pretrain(config, out=everyone))

    main_summary: dict[str, dict[str, dict]] = {}
    reference_runs: dict[str, list[RunRecord]] = {}
    for task, backbone, column, key in (
        ("coldrec", source, "test/ndcg@10", "ndcg@10"),
        ("gender", everyone, "test/accuracy", "accuracy"),  # per-user values exist for accuracy
    ):
        result = timed(
            f"main {task}",
            lambda task=task, backbone=backbone: run_compare(
                finetune_config(task),
                backbone,
                MAIN,
                seeds=args.seeds,
                out=out / f"main-{task}",
                reference="fine_all",
            ),
        )
        groups = by_strategy(result.records)
        reference_runs[task] = groups["fine_all"]
        main_summary[task] = {
            name: summarise(runs, groups["fine_all"], key, column) for name, runs in groups.items()
        }
        baselines = result.records[0].manifest.baselines
        lines = [f"{name}: {values.get(column, float('nan')):.4f}" for name, values in baselines.items()]
        title = f"### Main table: {task} ({column}, {args.seeds} seeds)"
        table = rows_table(main_summary[task], column)
        sections.append(f"{title}\n\n{table}\n\nBaselines on the same split: {'; '.join(lines)}.")

    second: dict[str, dict] = {}
    for label, kind, layers, options in SECOND_SIZES:
        config = with_adapter(finetune_config("coldrec"), kind, layers, options)
        safe = label.replace(" ", "-").replace("/", "_").replace("=", "")
        result = timed(
            f"size {label}",
            lambda config=config, safe=safe: run_compare(
                config, source, ["adapter"], seeds=args.seeds, out=out / f"size-{safe}"
            ),
        )
        second[label] = summarise(result.records, reference_runs["coldrec"], "ndcg@10", "test/ndcg@10")
    title = f"### Second sizes: coldrec (test/ndcg@10, {args.seeds} seeds)"
    sections.append(f"{title}\n\n{rows_table(second, 'test/ndcg@10')}")

    placement: dict[str, dict] = {}
    for kind, options in PLACEMENTS:
        for layers in LAYERS:
            config = with_adapter(finetune_config("coldrec"), kind, layers, options)
            result = timed(
                f"layers {kind} {layers}",
                lambda config=config, kind=kind, layers=layers: run_compare(
                    config, source, ["adapter"], seeds=1, out=out / f"layers-{kind}-{layers}"
                ),
            )
            placement[f"{kind} {layers}"] = summarise(
                result.records, reference_runs["coldrec"][:1], "ndcg@10", "test/ndcg@10"
            )
    for kind in ("bottleneck", "lora"):
        placement[f"{kind} all (main, seed 0)"] = summarise(
            [r for r in main_summary_records(out, kind)],
            reference_runs["coldrec"][:1],
            "ndcg@10",
            "test/ndcg@10",
        )
    sections.append(
        f"### Layer placement: coldrec (test/ndcg@10, 1 seed)\n\n{rows_table(placement, 'test/ndcg@10')}"
    )

    grid: dict[tuple[float, str, float], float] = {}
    for fraction in SOURCE_FRACTIONS:
        backbone = timed(f"pretrain {fraction:g}", lambda fraction=fraction: pretrained(out, fraction))
        result = timed(
            f"scaling {fraction:g}",
            lambda backbone=backbone, fraction=fraction: run_compare(
                finetune_config("coldrec"),
                backbone,
                list(SCALING_STRATEGIES),
                seeds=1,
                train_fractions=TRAIN_FRACTIONS,
                out=out / f"scaling-u{fraction:g}",
                reference="fine_all",
            ),
        )
        for r in result.records:
            grid[(fraction, r.spec.strategy, r.spec.fraction)] = r.manifest.metrics["test/ndcg@10"]
    header = ["strategy", "source users", *(f"train {t:g}" for t in TRAIN_FRACTIONS)]
    rows = [
        [
            s,
            f"{f:.0%} ({read_manifest(pretrained(out, f)).data['users']} users)",
            *(f"{grid[(f, s, t)]:.4f}" for t in TRAIN_FRACTIONS),
        ]
        for s in SCALING_STRATEGIES
        for f in SOURCE_FRACTIONS
    ]
    sections.append(f"### Scaling: coldrec test/ndcg@10 (1 seed)\n\n{markdown_table(header, rows)}")

    total = round(time.perf_counter() - started, 1)
    times = markdown_table(["step", "seconds"], [[k, v] for k, v in timings.items()] + [["total", total]])
    (out / "summary.md").write_text(
        "\n\n".join(sections) + f"\n\n### Wall time\n\n{times}\n", encoding="utf-8"
    )
    (out / "summary.json").write_text(
        json.dumps(
            {
                "main": main_summary,
                "second": second,
                "placement": placement,
                "grid": {str(k): v for k, v in grid.items()},
                "timings": timings,
            },
            indent=1,
            default=str,
        )
    )
    plot(main_summary["coldrec"], second, grid, out)
    print((out / "summary.md").read_text())


def main_summary_records(out: Path, kind: str) -> list[RunRecord]:
    """Seed-0 record of the main table's adapter:KIND row (for the placement table's 'all' row)."""
    from peterrec.commands.compare import RunSpec

    run = out / "main-coldrec" / "runs" / f"adapter-{kind}-f1-s0"
    manifest = read_manifest(run)
    per_user = json.loads((run / "test_per_user.json").read_text())
    return [RunRecord(RunSpec(f"adapter:{kind}", 1.0, 0, None), run, manifest, per_user, {})]


def plot(main: dict, second: dict, grid: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in {**main, **second}.items():
        share = max(s["backbone_share"], 1e-3)
        ax.errorbar(share, s["mean"], yerr=s["std"] or 0, fmt="o", capsize=3)
        ax.annotate(
            name.replace("adapter:", ""),
            (share, s["mean"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters outside the head, % of the pretrained model (log)")
    ax.set_ylabel("cold-start test NDCG@10 (mean ± std, 3 seeds)")
    ax.set_title("ML-100K genre cold start: quality vs trained parameters")
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(SCALING_STRATEGIES), figsize=(11, 3.6), sharey=True)
    for ax, strategy in zip(axes, SCALING_STRATEGIES, strict=True):
        for fraction in SOURCE_FRACTIONS:
            ax.plot(
                TRAIN_FRACTIONS,
                [grid[(fraction, strategy, t)] for t in TRAIN_FRACTIONS],
                marker="o",
                label=f"{fraction:.0%} source users",
            )
        ax.set_xscale("log")
        ax.set_title(strategy)
        ax.set_xlabel("target train fraction")
    axes[0].set_ylabel("test NDCG@10 (1 seed)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
