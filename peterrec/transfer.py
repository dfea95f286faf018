"""`peterrec finetune`: transfer a pretrained backbone to one task with one strategy, and save the patch."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch

from peterrec.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    environment_versions,
    finalize_run_dir,
    fit_or_discard,
    prepare_run_dir,
    save_weights,
    sha256_file,
)
from peterrec.config import FinetuneConfig, dump_config
from peterrec.finetune import TransferModel, apply_strategy, trainable_state_dict
from peterrec.run import PATCH_FILE, TARGET_VOCAB_FILE, BaseRun, load_backbone
from peterrec.runtime import peak_memory_bytes, resolve_device, seed_everything
from peterrec.tasks import build_task
from peterrec.trainer import EpochBatches, Trainer

logger = logging.getLogger(__name__)


def resolve_overrides(
    config: FinetuneConfig, strategy: str | None, seed: int | None, train_fraction: float | None
) -> FinetuneConfig:
    """Command-line choices win over the config file; the result is what gets saved."""
    s = dataclasses.replace(config.strategy, name=strategy or config.strategy.name)
    task = config.task
    if train_fraction is not None:
        task = dataclasses.replace(task, train_fraction=train_fraction)
    train = dataclasses.replace(
        config.train,
        seed=config.train.seed if seed is None else seed,
        lr=config.lr_for(s.name),
        monitor=config.resolved_monitor(),
    )
    resolved = dataclasses.replace(config, strategy=s, task=task, train=train)
    resolved.validate("command line")
    return resolved


def task_info(task) -> dict:
    info = {"type": task.kind, **task.describe()}
    if task.kind == "coldrec":
        info["target_items"] = task.num_target_items
    return info


def run_finetune(
    config: FinetuneConfig,
    backbone_dir: str | Path,
    *,
    strategy: str | None = None,
    out: str | Path | None = None,
    seed: int | None = None,
    train_fraction: float | None = None,
    resume: bool = False,
) -> Path:
    """Finetune and write ``<out>`` (default ``checkpoints/<name>-<task>-<strategy>``); returns it."""
    started = time.perf_counter()
    config = resolve_overrides(config, strategy, seed, train_fraction)
    device = resolve_device(config.train.device)
    seed_everything(config.train.seed)
    base: BaseRun = load_backbone(backbone_dir, device)
    task = build_task(config, base)
    info = task_info(task)
    name = config.strategy.name
    model = TransferModel(
        base.backbone,
        task.make_head(base.backbone.channels),
        config.strategy.pooling,
        config.strategy.train_cls,
    )
    s = config.strategy
    report = apply_strategy(
        model,
        name,
        insertion=s.insertion,
        ratio=s.ratio,
        parallel_form=s.parallel_form,
        train_norms=s.train_norms,
        seed=config.train.seed,
    )
    model.to(device)
    logger.info("%s: %s", name, report)

    run_dir = Path(out) if out else Path("checkpoints") / f"{config.name}-{config.task.type}-{name}"
    staging = prepare_run_dir(run_dir, resume)
    config_text = dump_config(config)
    atomic_write_text(staging / "config.yaml", config_text)
    if task.kind == "coldrec":
        task.target_vocab.save(staging / TARGET_VOCAB_FILE)

    batches = EpochBatches(len(task), config.train.batch_size, config.train.seed)
    bs = config.train.eval_batch_size

    def step_loss(epoch: int, step: int, generator: torch.Generator):
        return task.step_loss(model, batches.indices(epoch, step), generator, device)

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
    )
    result = fit_or_discard(trainer, staging, resume)
    model.load_state_dict(result.best_state, strict=False)
    valid, _ = task.evaluate(model, "valid", device, bs)
    test, per_user = task.evaluate(model, "test", device, bs)

    save_weights(staging / PATCH_FILE, trainable_state_dict(model))
    atomic_write_json(
        staging / "test_per_user.json", {k: np.asarray(v).tolist() for k, v in per_user.items()}
    )
    hashed = [PATCH_FILE, "config.yaml"] + ([TARGET_VOCAB_FILE] if task.kind == "coldrec" else [])
    seconds = [row["train/seconds"] for row in result.history]
    manifest = {
        "kind": "finetune",
        "name": config.name,
        "strategy": name,
        "task": info,
        "base": {"path": str(base.run_dir), "sha256": base.sha256, "name": base.manifest.get("name")},
        "sha256": {f: sha256_file(staging / f) for f in hashed},
        "parameters": {
            "trainable": report.trainable,
            "total": report.total,
            "stored": report.stored,
            "stored_bytes": (staging / PATCH_FILE).stat().st_size,
        },
        "seed": config.train.seed,
        "lr": config.train.lr,
        "train_fraction": config.task.train_fraction,
        "best_epoch": result.state.best_epoch,
        "epochs_run": len(result.history),
        "seconds_per_epoch": round(float(np.mean(seconds)), 3) if seconds else None,
        "train_seconds": round(sum(seconds), 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "peak_memory_bytes": peak_memory_bytes(device),
        "metrics": {**valid, **test},
        "baselines": task.baselines(),
        "device": str(device),
        "versions": environment_versions(),
    }
    atomic_write_json(staging / "manifest.json", manifest)
    return finalize_run_dir(staging, run_dir)
