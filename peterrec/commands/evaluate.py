"""`peterrec evaluate`: a run's metrics recomputed from its weights on its own data and split."""

from __future__ import annotations

import json
from pathlib import Path

import click

from peterrec.choices import EVAL_SPLITS
from peterrec.commands.common import backbone_option
from peterrec.data.next_item import load_next_item_data
from peterrec.evaluation.next_item import evaluate_next_item_model
from peterrec.runs import BaseRun, load_any
from peterrec.tasks import build_task


def evaluate_run(run_dir: Path, split: str, backbone: str | None = None) -> dict[str, float]:
    """Metrics recomputed from the stored weights on the run's own data and split (never echoed)."""
    run = load_any(run_dir, backbone)
    if isinstance(run, BaseRun):  # a pretraining run: the next-item protocol on its own click log
        data = load_next_item_data(run.config.data, vocab=run.vocab)
        return evaluate_next_item_model(run.model, data, split, run.config.train.eval_batch_size, "cpu")
    task = build_task(run.config, run.base)
    return task.evaluate(run.model, split, "cpu")[0]


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--split", type=click.Choice(EVAL_SPLITS), default="test")
@backbone_option
def command(run_dir: str, split: str, backbone: str | None) -> None:
    """Recompute a finetuned or pretrained run's metrics from its weights (never echoes stored ones)."""
    metrics = evaluate_run(Path(run_dir), split, backbone)
    click.echo(json.dumps(metrics, indent=2))
