"""Human-readable tables of run results (markdown, so they paste into docs and issues)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from peterrec import checkpoint as ckpt
from peterrec.errors import PeterRecError
from peterrec.manifest import read_manifest

REFERENCE = "peterrec"  # the strategy that paired confidence intervals compare against
PRETRAIN_COLUMNS = ("test/hr@10", "test/ndcg@10", "test/mrr", "valid/ndcg@10")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain markdown table; floats get four decimals."""

    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pretrain_summary(run_dir: Path) -> str:
    """The model beside its popularity and Markov baselines, full ranking, plus cost figures."""
    manifest = read_manifest(run_dir)
    rows = [["NextItNet (this run)", *(manifest.metrics.get(c, "") for c in PRETRAIN_COLUMNS)]]
    for name, values in manifest.baselines.items():
        rows.append([name, *(values.get(c, "") for c in PRETRAIN_COLUMNS)])
    params = manifest.parameters
    data = manifest.data
    facts = (
        f"run {run_dir}: {data['users']} users, {data['items']} items; "
        f"{params['total']:,} parameters ({params['backbone']:,} backbone); "
        f"best epoch {manifest.best_epoch}/{manifest.epochs_run}; "
        f"train {manifest.train_seconds} s, {manifest.tokens_per_s} tokens/s on {manifest.device}"
        f"{item_encoder_fact(run_dir)}"
    )
    table = markdown_table(["method (full ranking, history excluded)", *PRETRAIN_COLUMNS], rows)
    return f"{table}\n\n{facts}"


def item_encoder_fact(run_dir: Path) -> str:
    """``; items as text: ...`` for a backbone with a content item encoder, else empty."""
    from peterrec.config import PretrainConfig, load_config

    model = load_config(PretrainConfig, Path(run_dir) / "config.yaml").model
    if model.item_encoder == "id":
        return ""
    text = model.text
    columns = ", ".join(text.columns) if text.columns else "every text column"
    return f"; items: {model.item_encoder} ({text.features} features of {columns})"


def primary_columns(metrics: dict) -> list[str]:
    wanted = ("test/accuracy", "test/macro_f1", "test/auc", "test/hr@10", "test/ndcg@10", "test/mrr")
    sampled = [
        k for k in metrics if k.startswith("test/sampled99_") and k[15:] in ("hr@10", "ndcg@10", "mrr")
    ]
    return [k for k in wanted if k in metrics] + sampled


def finetune_summary(run_dir: Path) -> str:
    """A finetuned run beside the task's simple baselines, plus its parameter and time cost."""
    manifest = read_manifest(run_dir)
    columns = primary_columns(manifest.metrics)
    rows = [[f"{manifest.strategy} (this run)", *(manifest.metrics.get(c, "") for c in columns)]]
    for name, values in manifest.baselines.items():
        rows.append([name, *(values.get(c, "") for c in columns)])
    p = manifest.parameters
    facts = (
        f"run {run_dir}: task {manifest.task_type}; trainable {p['trainable']:,} of "
        f"{p['total']:,} parameters ({100 * p['trainable'] / max(1, p['total']):.2f}%), "
        f"patch file {p['stored_bytes']:,} bytes; "
        f"best epoch {manifest.best_epoch}/{manifest.epochs_run}, "
        f"{manifest.seconds_per_epoch} s/epoch"
    )
    return f"{markdown_table(['method', *columns], rows)}\n\n{facts}"


# ------------------------------------------------------------------------- compare tables


def _cell(stats: dict | None) -> str:
    if stats is None:
        return ""
    return f"{stats['mean']:.4f}" if stats["std"] is None else f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def _ci_cell(row: dict, reference: str) -> str:
    if row["method"] == reference:
        return "reference"
    ci = row.get("ci")
    return "" if ci is None else f"{ci['diff']:+.4f} [{ci['low']:+.4f}, {ci['high']:+.4f}]"


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def render_table(
    rows: list[dict], columns: list[str], main: str, fractions: list[float], reference: str | None = REFERENCE
) -> str:
    """The compare table; a CI column against ``reference`` when that row is present."""
    show_cuda = any(r.get("peak_cuda_mb") is not None for r in rows)
    show_ci = any(r["method"] == reference for r in rows)
    header = ["method"] + (["train fraction"] if len(fractions) > 1 else []) + ["lr", *columns]
    header += ["trainable params", "backbone %", "patch bytes", "s/epoch", "peak RSS MB"]
    header += ["peak CUDA MB"] * show_cuda + [f"Δ {main} vs {reference} (95% CI)"] * show_ci
    lines = []
    for r in rows:
        line = [r["method"]] + ([f"{r['train_fraction']:g}"] if len(fractions) > 1 else [])
        line += [_num(r.get("lr"), "g"), *(_cell(r["metrics"].get(c)) for c in columns)]
        costs = {
            "trainable": ",",
            "backbone_share": ".2f",
            "stored_bytes": ",",
            "seconds_per_epoch": ".3f",
            "peak_rss_mb": ".0f",
        }
        line += [_num(r.get(k), fmt) for k, fmt in costs.items()]
        line += [_num(r.get("peak_cuda_mb"), ".1f")] * show_cuda + [_ci_cell(r, reference)] * show_ci
        lines.append(line)
    return markdown_table(header, lines)


def write_outputs(
    out: Path, text: str, rows: list[dict], columns: list[str], backbones: list[dict] | None = None
) -> None:
    """``results.md`` (table + note), ``results.json`` (everything) and ``results.csv`` (flat). ``backbones``
    (label, path, sha256 of each, when a compare has several) go into ``results.json``, and the rows' backbone
    labels into both."""
    ckpt.atomic_write_text(out / "results.md", text + "\n")
    results = {"columns": columns, "rows": rows, "note": text.split("\n\n")[-1]}
    ckpt.atomic_write_json(
        out / "results.json", results if backbones is None else {**results, "backbones": backbones}
    )
    fields = ["method"] + ["backbone"] * any("backbone" in r for r in rows) + ["train_fraction", "lr"]
    fields += [f"{c}_{s}" for c in columns for s in ("mean", "std")]
    fields += ["trainable", "stored_bytes", "seconds_per_epoch", "peak_rss_mb", "peak_cuda_mb"]
    fields += ["ci_diff", "ci_low", "ci_high"]
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            flat = {**r, **{f"{c}_{s}": m[s] for c, m in r["metrics"].items() for s in ("mean", "std")}}
            flat.update({f"ci_{k}": v for k, v in (r.get("ci") or {}).items()})
            writer.writerow(flat)


def plot_results(rows: list[dict], main: str, fractions: list[float], path: Path) -> Path:
    """Main metric (mean ± std) per strategy against train fraction, or bars for one fraction; the simple
    baselines as dashed lines."""
    try:
        import matplotlib
    except ImportError:
        raise PeterRecError("--plot needs matplotlib; install it with pip install '.[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["method"] for r in rows if not r.get("baseline")):
        mine = [r for r in rows if r["method"] == name]
        mean, std = [r["metrics"][main]["mean"] for r in mine], [r["metrics"][main]["std"] or 0 for r in mine]
        if len(fractions) == 1:
            ax.bar(name, mean, yerr=std, capsize=4)
        else:
            x = [r["train_fraction"] for r in mine]
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=name)
    for name in dict.fromkeys(r["method"] for r in rows if r.get("baseline")):
        mine = [r for r in rows if r["method"] == name and main in r["metrics"]]
        values = [r["metrics"][main]["mean"] for r in mine]
        if len(fractions) == 1 and values:
            ax.axhline(values[0], linestyle="--", linewidth=1, color=f"C{len(ax.lines) % 10}", label=name)
        elif values:
            ax.plot([r["train_fraction"] for r in mine], values, linestyle="--", marker=".", label=name)
    if len(fractions) == 1:
        ax.tick_params(axis="x", rotation=30)
    else:
        ax.set_xlabel("train fraction")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.set_ylabel(f"{main} (mean ± std over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- entry
