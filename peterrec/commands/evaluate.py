"""`peterrec evaluate`: a run's metrics recomputed from its weights on its own data and split."""

from __future__ import annotations

import json
from pathlib import Path

import click

from peterrec.choices import EVAL_SPLITS
from peterrec.commands.common import backbone_option, set_option
from peterrec.config import FinetuneConfig, load_config
from peterrec.data.next_item import load_next_item_data
from peterrec.errors import ConfigError
from peterrec.evaluation.next_item import evaluate_next_item_model
from peterrec.runs import BaseRun, load_any, load_backbone
from peterrec.tasks import build_task


def evaluate_run(
    run_dir: Path, split: str, backbone: str | None = None, sample: int | None = None
) -> dict[str, float]:
    """Metrics recomputed from the stored weights on the run's own data and split (never echoed).

    ``sample``: a pretraining run is evaluated on a seeded sample of that many users (the metric names
    say ``sample<N>``), for logs too large to rank every user quickly.
    """
    run = load_any(run_dir, backbone)
    if isinstance(run, BaseRun):  # a pretraining run: the next-item protocol on its own click log
        data = load_next_item_data(run.config.data, vocab=run.vocab)
        batch = run.config.train.eval_batch_size
        return evaluate_next_item_model(run.model, data, split, batch, "cpu", sample=sample)
    if sample is not None:
        raise ConfigError("--sample: only a pretraining run is evaluated on a sample of users")
    task = build_task(run.config, run.base)
    return task.evaluate(run.model, split, "cpu")[0]


def evaluate_zero_shot(backbone_dir: Path, config_path: str, split: str, overrides: list[str]) -> dict:
    """Cold-start metrics of a content backbone with no target training (``--zero-shot -c CONFIG``)."""
    config = load_config(FinetuneConfig, config_path, overrides)
    if config.task.type != "coldrec":
        raise ConfigError(f"{config_path}: --zero-shot evaluates a coldrec task, not {config.task.type!r}")
    base = load_backbone(backbone_dir)
    task = build_task(config, base)
    return task.evaluate(task.zero_shot_model(), split, "cpu")[0]


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--split", type=click.Choice(EVAL_SPLITS), default="test")
@click.option(
    "--zero-shot",
    is_flag=True,
    help="RUN_DIR is a content backbone: rank the cold-start targets of -c CONFIG with no target training.",
)
@click.option("-c", "--config", "config_path", type=click.Path(), default=None, help="With --zero-shot.")
@set_option
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    help="Pretraining runs: rank a seeded sample of this many users (labelled in the metric names).",
)
@backbone_option
def command(run_dir, split, zero_shot, config_path, overrides, sample, backbone) -> None:
    """Recompute a finetuned or pretrained run's metrics from its weights (never echoes stored ones)."""
    if zero_shot != (config_path is not None):
        raise click.UsageError(
            "--zero-shot and -c/--config go together (a backbone run and a coldrec config)"
        )
    if zero_shot:
        metrics = evaluate_zero_shot(Path(run_dir), config_path, split, list(overrides))
    else:
        metrics = evaluate_run(Path(run_dir), split, backbone, sample)
    click.echo(json.dumps(metrics, indent=2))
