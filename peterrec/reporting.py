"""Human-readable tables of run results (markdown, so they paste into docs and issues)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peterrec.checkpoint import read_manifest

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
    rows = [["NextItNet (this run)", *(manifest["metrics"].get(c, "") for c in PRETRAIN_COLUMNS)]]
    for name, values in manifest.get("baselines", {}).items():
        rows.append([name, *(values.get(c, "") for c in PRETRAIN_COLUMNS)])
    params = manifest["parameters"]
    data = manifest["data"]
    facts = (
        f"run {run_dir}: {data['users']} users, {data['items']} items; "
        f"{params['total']:,} parameters ({params['backbone']:,} backbone); "
        f"best epoch {manifest['best_epoch']}/{manifest['epochs_run']}; "
        f"train {manifest['train_seconds']} s, {manifest['tokens_per_s']} tokens/s on {manifest['device']}"
    )
    table = markdown_table(["method (full ranking, history excluded)", *PRETRAIN_COLUMNS], rows)
    return f"{table}\n\n{facts}"


def _primary_columns(metrics: dict) -> list[str]:
    wanted = ("test/accuracy", "test/macro_f1", "test/auc", "test/hr@10", "test/ndcg@10", "test/mrr")
    sampled = [
        k for k in metrics if k.startswith("test/sampled99_") and k[15:] in ("hr@10", "ndcg@10", "mrr")
    ]
    return [k for k in wanted if k in metrics] + sampled


def finetune_summary(run_dir: Path) -> str:
    """A finetuned run beside the task's simple baselines, plus its parameter and time cost."""
    manifest = read_manifest(run_dir)
    columns = _primary_columns(manifest["metrics"])
    rows = [[f"{manifest['strategy']} (this run)", *(manifest["metrics"].get(c, "") for c in columns)]]
    for name, values in manifest.get("baselines", {}).items():
        rows.append([name, *(values.get(c, "") for c in columns)])
    p = manifest["parameters"]
    facts = (
        f"run {run_dir}: task {manifest['task']['type']}; trainable {p['trainable']:,} of "
        f"{p['total']:,} parameters ({100 * p['trainable'] / max(1, p['total']):.2f}%), "
        f"patch file {p['stored_bytes']:,} bytes; "
        f"best epoch {manifest['best_epoch']}/{manifest['epochs_run']}, "
        f"{manifest['seconds_per_epoch']} s/epoch"
    )
    return f"{markdown_table(['method', *columns], rows)}\n\n{facts}"
