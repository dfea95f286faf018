"""`peterrec finetune`: transfer a pretrained backbone to one task with one strategy, and save the patch."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import click
import numpy as np
import torch

from peterrec.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    check_resume_config,
    fit_or_discard,
    prepare_run_dir,
    save_weights,
    sha256_file,
)
from peterrec.choices import STRATEGIES
from peterrec.commands.common import config_option, finish_run, set_option, training_facts
from peterrec.config import FinetuneConfig, StrategyConfig, check_values, dump_config, load_config
from peterrec.manifest import BaseRef, FinetuneManifest
from peterrec.model.transfer import (
    apply_strategy,
    item_rank_applies,
    item_scale_applies,
    trainable_state_dict,
)
from peterrec.reporting import finetune_summary
from peterrec.runs import PATCH_FILE, PER_USER_FILE, BaseRun, load_backbone, strategy_kwargs
from peterrec.runtime import peak_memory_bytes, resolve_device, seed_everything
from peterrec.tasks import build_task, resolve_monitor
from peterrec.tasks.base import transfer_model
from peterrec.training.distributed import device_for, from_environment
from peterrec.training.trainer import EpochBatches, Trainer

logger = logging.getLogger(__name__)


def per_user_json(per_user: dict, baseline_test: dict[str, dict]) -> dict:
    """The run's per-user test outputs, and under ``baselines`` each simple baseline's, as JSON values."""
    out = {k: np.asarray(v).tolist() for k, v in per_user.items()}
    out["baselines"] = {
        name: {k: np.asarray(v).tolist() for k, v in values.items()} for name, values in baseline_test.items()
    }
    return out


def without_inert_options(strategy: StrategyConfig) -> StrategyConfig:
    """``strategy`` with the options that do not act on it at their defaults (``item_scale: keep``,
    ``item_rank: 0``). A run saves only what acted on it, so changing such an option in a shared config (for
    the strategies it does act on) leaves the other strategies' finished runs current."""
    if not item_scale_applies(strategy.name):
        strategy = dataclasses.replace(strategy, item_scale="keep")
    if not item_rank_applies(strategy.name):
        strategy = dataclasses.replace(strategy, item_rank=0)
    return strategy


def resolve_overrides(
    config: FinetuneConfig, strategy: str | None, seed: int | None, train_fraction: float | None
) -> FinetuneConfig:
    """Command-line choices win over the config file; the result is what gets saved."""
    s = without_inert_options(dataclasses.replace(config.strategy, name=strategy or config.strategy.name))
    task = config.task
    if train_fraction is not None:
        task = dataclasses.replace(task, train_fraction=train_fraction)
    resolved = dataclasses.replace(config, strategy=s, task=task)
    train = dataclasses.replace(
        config.train,
        seed=config.train.seed if seed is None else seed,
        lr=config.lr_for(s.name),
        monitor=resolve_monitor(resolved),
    )
    resolved = dataclasses.replace(resolved, train=train)
    check_values(resolved, "command line (--seed, --train-fraction)")
    resolved.validate("command line")
    return resolved


def run_finetune(
    config: FinetuneConfig,
    backbone_dir: str | Path,
    *,
    strategy: str | None = None,
    out: str | Path | None = None,
    seed: int | None = None,
    train_fraction: float | None = None,
    resume: bool = False,
) -> Path | None:
    """Finetune and write ``<out>`` (default ``checkpoints/<name>-<task>-<strategy>``); returns it.

    Under ``torchrun`` every rank trains its shard of each batch; rank 0 alone writes (others return None).
    """
    started = time.perf_counter()
    config = resolve_overrides(config, strategy, seed, train_fraction)
    device = resolve_device(config.train.device)
    distributed = from_environment(device)
    device = device_for(distributed, device)
    seed_everything(config.train.seed)
    base: BaseRun = load_backbone(backbone_dir, device)
    task = build_task(config, base)
    name, s = config.strategy.name, config.strategy
    # The baselines read the pretrained backbone: before any strategy patches or re-initialises it.
    baselines, baseline_test = distributed.on_main(task.baselines)
    model = transfer_model(base.backbone, task.make_head(base), s)
    report = apply_strategy(model, name, seed=config.train.seed, **strategy_kwargs(config))
    model.to(device)
    logger.info("%s: %s", name, report)

    run_dir = Path(out) if out else Path("checkpoints") / f"{config.name}-{config.task.type}-{name}"
    config_text = dump_config(config)

    def stage() -> tuple[Path, list[str]]:
        staging = prepare_run_dir(run_dir, resume)
        check_resume_config(staging, config_text)
        atomic_write_text(staging / "config.yaml", config_text)
        return staging, task.save_files(staging)

    staging, task_files = distributed.on_main(stage)

    batches = EpochBatches(len(task), config.train.batch_size, config.train.seed)
    bs = config.train.eval_batch_size

    def step_loss(epoch: int, step: int, generator: torch.Generator):
        return task.step_loss(model, distributed.shard(batches.indices(epoch, step)), generator, device)

    def validate() -> dict:
        return task.evaluate(model, "valid", device, bs)[0]

    trainer = Trainer(
        model,
        config.train,
        steps_per_epoch=batches.steps_per_epoch,
        step_loss=step_loss,
        validate=validate,
        work_dir=staging,
        device=device,
        monitor=config.train.monitor,
        distributed=distributed,
    )
    result = fit_or_discard(trainer, staging, resume, owner=distributed.is_main)

    def write_run() -> Path:
        """Rank 0 (or the only process): evaluate the best weights and write the run."""
        model.load_state_dict(result.best_state, strict=False)
        valid, _ = task.evaluate(model, "valid", device, bs)
        test, per_user = task.evaluate(model, "test", device, bs)

        save_weights(staging / PATCH_FILE, trainable_state_dict(model))
        atomic_write_json(staging / PER_USER_FILE, per_user_json(per_user, baseline_test))
        seconds = [row["train/seconds"] for row in result.history]
        manifest = FinetuneManifest(
            name=config.name,
            strategy=name,
            task=task.describe(),
            base=BaseRef(path=str(base.run_dir), sha256=base.sha256, name=base.manifest.name),
            adapters=report.adapters,
            sha256={f: sha256_file(staging / f) for f in [PATCH_FILE, "config.yaml", *task_files]},
            parameters={
                "trainable": report.trainable,
                "total": report.total,
                "stored": report.stored,
                "stored_bytes": (staging / PATCH_FILE).stat().st_size,
                "head": report.head,  # trainable head (+ [CLS]); trainable - head = what adapts the backbone
                "pretrained": base.manifest.parameters["total"],  # backbone + item tables of the base run
            },
            lr=config.train.lr,
            train_fraction=config.task.train_fraction,
            seconds_per_epoch=round(float(np.mean(seconds)), 3) if seconds else None,
            peak_memory_bytes=peak_memory_bytes(device),
            metrics={**valid, **test},
            baselines=baselines,
            **training_facts(result, started, device, config.train.seed, trainer.precision),
        )
        return finish_run(manifest, staging, run_dir)

    return distributed.finish(write_run)


@click.command()
@config_option
@click.option("--backbone", type=click.Path(), required=True, help="A pretrain run directory.")
@click.option("--strategy", default=None, help=f"{', '.join(STRATEGIES)} (default: strategy.name).")
@set_option
@click.option("--seed", type=int, default=None, help="Initialisation and order seed (the split stays fixed).")
@click.option(
    "--train-fraction", type=float, default=None, help="Finetune on this fraction of training users."
)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Run directory (default checkpoints/<name>-<task>-<strategy>).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last.pt.")
def command(config_path, backbone, strategy, overrides, seed, train_fraction, out, resume) -> None:
    """Transfer a pretrained backbone to one task with one strategy; saves only the trained tensors."""
    chosen = [f"strategy.name={strategy}"] if strategy else []
    config = load_config(FinetuneConfig, config_path, [*overrides, *chosen])
    run_dir = run_finetune(config, backbone, out=out, seed=seed, train_fraction=train_fraction, resume=resume)
    if run_dir is not None:
        click.echo(finetune_summary(run_dir))
