"""`peterrec pretrain`: train a NextItNet backbone on source click sequences and write a run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
import numpy as np
import torch

from peterrec.checkpoint import (
    atomic_write_text,
    check_resume_config,
    fit_or_discard,
    prepare_run_dir,
    save_weights,
    sha256_file,
    sha256_text,
)
from peterrec.commands.common import config_option, finish_run, set_option, training_facts
from peterrec.config import PretrainConfig, dump_config, load_config
from peterrec.data.next_item import NextItemData, load_next_item_data, make_windows
from peterrec.data.sequences import left_pad, trim_shared_padding
from peterrec.evaluation.next_item import evaluate_next_item_model, next_item_baselines
from peterrec.item_content import build_item_content
from peterrec.manifest import BackboneManifest
from peterrec.model.backbone import count_parameters
from peterrec.model.item_encoder import CONTENT_ITEM_ENCODERS
from peterrec.model.next_item import NextItemModel, build_next_item_model
from peterrec.reporting import pretrain_summary
from peterrec.runs import WEIGHTS_FILE
from peterrec.runtime import resolve_device, seed_everything
from peterrec.tasks import task_class
from peterrec.tokens import NUM_SPECIAL_TOKENS, PAD
from peterrec.training.distributed import SINGLE, Distributed, device_for, from_environment
from peterrec.training.objectives import future_window_batch, mask_batch, pretrain_loss, resolve_softmax
from peterrec.training.samplers import make_sampler
from peterrec.training.trainer import EpochBatches, Trainer

logger = logging.getLogger(__name__)


def configured_softmax(config: PretrainConfig, num_items: int) -> str:
    """``full`` or ``sampled``: ``objective.softmax`` with ``auto`` resolved for this vocabulary."""
    model = config.model
    return resolve_softmax(config.objective.softmax, num_items, model.channels, model.sparse_embedding)


def make_step_loss(
    model: NextItemModel,
    config: PretrainConfig,
    data: NextItemData,
    device: torch.device,
    distributed: Distributed = SINGLE,
):
    """The per-step loss closure for the configured objective and softmax (this rank's shard of a batch)."""
    obj = config.objective
    autoregressive = obj.objective == "autoregressive"
    width = config.data.max_len + (1 if autoregressive else 0)
    # Padded once, int32 to halve the memory; a step is then one row gather, no per-sequence Python.
    windows = torch.from_numpy(left_pad(make_windows(data.train, width, config.data.path), width, pad=PAD))
    windows = windows.to(torch.int32)
    batches = EpochBatches(len(windows), config.train.batch_size, config.train.seed)
    softmax = configured_softmax(config, data.num_items)
    if obj.softmax == "auto":
        logger.info("objective.softmax auto: %s for %d items", softmax, data.num_items)
    sampler = in_batch_prior = None
    if softmax == "sampled":
        counts = data.vocab.counts
        sampler = make_sampler(obj.sampler, data.num_items, counts=counts, power=obj.sampler_power)
        if obj.in_batch_negatives:  # the batch's targets follow the click distribution
            in_batch_prior = make_sampler("popularity", data.num_items, counts=counts)

    def step_loss(epoch: int, step: int, generator: torch.Generator) -> tuple[torch.Tensor, int, int]:
        chosen = distributed.shard(batches.indices(epoch, step))
        seqs = trim_shared_padding(windows[torch.from_numpy(chosen)].long())
        if autoregressive:
            inputs, targets = future_window_batch(seqs, obj.target_window, generator)
        else:
            inputs, targets = mask_batch(seqs, data.num_items, generator, obj.mask_ratio, obj.max_masked)
        inputs, targets = inputs.to(device), targets.to(device)
        hidden = model(inputs)
        loss = pretrain_loss(
            model.output,
            hidden,
            targets,
            softmax=softmax,
            sampler=sampler,
            num_samples=obj.num_samples,
            generator=generator,
            logq_correction=obj.logq_correction,
            in_batch_prior=in_batch_prior,
            chunk_items=obj.chunk_items,
        )
        return loss, int((inputs != PAD).sum()), int((targets != PAD).sum())

    return step_loss, batches.steps_per_epoch


def run_pretrain(config: PretrainConfig, out: str | Path | None = None, resume: bool = False) -> Path | None:
    """Pretrain and write ``checkpoints/<name>/`` (or ``out``); returns the finished run directory.

    Under ``torchrun`` every rank trains its shard of each batch and rank 0 alone writes the run (the
    other ranks return None).
    """
    started = time.perf_counter()
    device = resolve_device(config.train.device)
    distributed = from_environment(device, sparse=config.model.sparse_embedding)
    device = device_for(distributed, device)
    seed_everything(config.train.seed)
    data = load_next_item_data(config.data)
    logger.info("data: %s", data.stats())
    content = None
    if config.model.item_encoder in CONTENT_ITEM_ENCODERS:
        content = build_item_content(config.model.text, data.vocab, progress=config.train.progress)
        logger.info(
            "item content: %s features, %d dimensions", content.featurizer.kind, content.featurizer.dim
        )
    features = content.features if content is not None else None
    model = build_next_item_model(config.model, data.num_items, config.data.max_len, features).to(device)
    step_loss, steps_per_epoch = make_step_loss(model, config, data, device, distributed)

    run_dir = Path(out) if out else Path("checkpoints") / config.name
    config_text = dump_config(config)

    def stage() -> Path:
        staging = prepare_run_dir(run_dir, resume)
        check_resume_config(staging, config_text)
        atomic_write_text(staging / "config.yaml", config_text)
        data.vocab.save(staging / "vocab.json")
        return staging

    staging = distributed.on_main(stage)

    bs, dev = config.train.eval_batch_size, device
    trainer = Trainer(
        model,
        config.train,
        steps_per_epoch=steps_per_epoch,
        step_loss=step_loss,
        validate=lambda: evaluate_next_item_model(model, data, "valid", bs, dev),
        work_dir=staging,
        device=device,
        monitor=task_class("nextitem").resolve_monitor(None, config.train.monitor),
        distributed=distributed,
    )
    result = fit_or_discard(trainer, staging, resume, owner=distributed.is_main)

    def write_run() -> Path:
        """Rank 0 (or the only process): evaluate the best weights and write the run."""
        model.load_state_dict(result.best_state, strict=False)
        metrics = {
            **evaluate_next_item_model(model, data, "valid", bs, dev),
            **evaluate_next_item_model(model, data, "test", bs, dev),
        }
        baselines = next_item_baselines(data, bs)

        save_weights(staging / WEIGHTS_FILE, model.state_dict())
        content_files = content.save(staging) if content is not None else []
        tokens_per_s = [row["train/tokens_per_s"] for row in result.history]
        manifest = BackboneManifest(
            name=config.name,
            sha256={
                name: sha256_file(staging / name)
                for name in (WEIGHTS_FILE, "vocab.json", "config.yaml", *content_files)
            },
            config_sha256=sha256_text(config_text),
            parameters={
                "backbone": count_parameters(model.backbone),
                "output_layer": count_parameters(model.output),
                "total": count_parameters(model),
            },
            num_items=data.num_items,
            special_tokens=NUM_SPECIAL_TOKENS,
            data={"path": config.data.path, "fingerprint": data.fingerprint, **data.stats()},
            tokens_per_s=round(float(np.median(tokens_per_s)), 1) if tokens_per_s else None,
            metrics=metrics,
            baselines=baselines,
            softmax=configured_softmax(config, data.num_items),
            **training_facts(result, started, device, config.train.seed, trainer.precision),
        )
        return finish_run(manifest, staging, run_dir)

    return distributed.finish(write_run)


@click.command()
@config_option
@set_option
@click.option("--out", type=click.Path(), default=None, help="Run directory (default checkpoints/<name>).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last.pt.")
def command(config_path: str, overrides: tuple[str, ...], out: str | None, resume: bool) -> None:
    """Pretrain a NextItNet backbone on source-domain click sequences."""
    config = load_config(PretrainConfig, config_path, list(overrides))
    run_dir = run_pretrain(config, out=out, resume=resume)
    if run_dir is not None:
        click.echo(pretrain_summary(run_dir))
