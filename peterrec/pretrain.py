"""`peterrec pretrain`: train a NextItNet backbone on source click sequences and write a run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from peterrec import MASK, NUM_SPECIAL_TOKENS, PAD
from peterrec.backbone import NextItNet, count_parameters
from peterrec.baselines import MarkovScorer, PopularityScorer
from peterrec.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    environment_versions,
    finalize_run_dir,
    fit_or_discard,
    prepare_run_dir,
    save_weights,
    sha256_file,
    sha256_text,
)
from peterrec.config import PretrainConfig, dump_config
from peterrec.data.sequences import left_pad
from peterrec.errors import CheckpointError
from peterrec.evaluation import evaluate_ranking
from peterrec.nextitem_data import NextItemData, load_next_item_data, make_windows
from peterrec.objectives import ItemOutput, autoregressive_batch, make_sampler, mask_batch, pretrain_loss
from peterrec.runtime import resolve_device, seed_everything
from peterrec.trainer import EpochBatches, Trainer

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "backbone.safetensors"


class NextItemModel(nn.Module):
    """A backbone with its item softmax layer: hidden states, losses and next-item scores."""

    def __init__(self, backbone: NextItNet, output: ItemOutput, max_len: int):
        super().__init__()
        self.backbone = backbone
        self.output = output
        self.max_len = max_len

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.backbone(seqs)

    def model_input(self, histories: torch.Tensor) -> torch.Tensor:
        """The last ``max_len`` positions to read a next-item prediction from.

        Causal: the history itself, read at its last position. Non-causal: the history plus a
        trailing [MASK], read at the [MASK].
        """
        if self.backbone.causal:
            return histories[:, -self.max_len :]
        tail = histories[:, -(self.max_len - 1) :] if self.max_len > 1 else histories[:, :0]
        mask = torch.full((len(histories), 1), MASK, dtype=histories.dtype, device=histories.device)
        return torch.cat([tail, mask], dim=1)

    def next_item_scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, H) item ids -> (B, num_items) scores; column j is item id j + 4."""
        hidden = self.backbone(self.model_input(histories))[:, -1]
        return self.output(hidden)


def build_model(config: PretrainConfig, num_items: int) -> NextItemModel:
    m = config.model
    backbone = NextItNet(num_items, m.channels, m.dilations, m.kernel_size, m.causal, m.sparse_embedding)
    backbone.check_length(config.data.max_len)
    output = ItemOutput(num_items, m.channels, sparse=m.sparse_embedding)
    return NextItemModel(backbone, output, config.data.max_len)


def make_step_loss(model: NextItemModel, config: PretrainConfig, data: NextItemData, device: torch.device):
    """The per-step loss closure for the configured objective and softmax."""
    obj = config.objective
    autoregressive = obj.objective == "autoregressive"
    width = config.data.max_len + (1 if autoregressive else 0)
    # Padded once, int32 to halve the memory; a step is then one row gather, no per-sequence Python.
    windows = torch.from_numpy(left_pad(make_windows(data.train, width, config.data.path), width, pad=PAD))
    windows = windows.to(torch.int32)
    batches = EpochBatches(len(windows), config.train.batch_size, config.train.seed)
    sampler = None
    if obj.softmax == "sampled":
        sampler = make_sampler(obj.sampler, data.num_items, counts=data.vocab.counts)

    def step_loss(epoch: int, step: int, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        chosen = batches.indices(epoch, step)
        seqs = windows[torch.from_numpy(chosen)].long()
        if autoregressive:
            inputs, targets = autoregressive_batch(seqs)
        else:
            inputs, targets = mask_batch(seqs, data.num_items, generator, obj.mask_ratio, obj.max_masked)
        inputs, targets = inputs.to(device), targets.to(device)
        hidden = model(inputs)
        loss = pretrain_loss(
            model.output,
            hidden,
            targets,
            softmax=obj.softmax,
            sampler=sampler,
            num_samples=obj.num_samples,
            generator=generator,
            logq_correction=obj.logq_correction,
        )
        return loss, int((inputs != PAD).sum())

    return step_loss, batches.steps_per_epoch


def baseline_metrics(data: NextItemData, batch_size: int) -> dict[str, dict[str, float]]:
    """Popularity and first-order Markov on the same split and protocol as the model."""
    rows = {}
    for name, scorer in (
        ("popularity", PopularityScorer(data.train, data.num_items)),
        ("markov", MarkovScorer(data.train, data.num_items)),
    ):
        valid, _ = evaluate_ranking(
            scorer.scores, data.valid_histories, data.valid_targets, batch_size=batch_size
        )
        test, _ = evaluate_ranking(
            scorer.scores, data.test_histories, data.test_targets, batch_size=batch_size
        )
        rows[name] = {
            **{f"valid/{k}": v for k, v in valid.items()},
            **{f"test/{k}": v for k, v in test.items()},
        }
    return rows


def evaluate_next_item(model: NextItemModel, data: NextItemData, split: str, batch_size: int, device):
    """Leave-last-out metrics (``{split}/...``) and per-user ranks of ``model`` on ``split``."""
    model.eval()
    histories = data.valid_histories if split == "valid" else data.test_histories
    targets = data.valid_targets if split == "valid" else data.test_targets
    return evaluate_ranking(
        model.next_item_scores, histories, targets, batch_size=batch_size, device=device, prefix=f"{split}/"
    )


def evaluate_model(model: NextItemModel, data: NextItemData, split: str, batch_size: int, device) -> dict:
    return evaluate_next_item(model, data, split, batch_size, device)[0]


def _check_resume_config(staging: Path, config_text: str) -> None:
    saved = staging / "config.yaml"
    if saved.is_file() and saved.read_text(encoding="utf-8") != config_text:
        raise CheckpointError(
            f"{saved}: the interrupted run used a different config; resume with the same config and "
            "--set values, or delete the directory to start over"
        )


def run_pretrain(config: PretrainConfig, out: str | Path | None = None, resume: bool = False) -> Path:
    """Pretrain and write ``checkpoints/<name>/`` (or ``out``); returns the finished run directory."""
    started = time.perf_counter()
    device = resolve_device(config.train.device)
    seed_everything(config.train.seed)
    data = load_next_item_data(config.data)
    logger.info("data: %s", data.stats())
    model = build_model(config, data.num_items).to(device)
    step_loss, steps_per_epoch = make_step_loss(model, config, data, device)

    run_dir = Path(out) if out else Path("checkpoints") / config.name
    config_text = dump_config(config)
    staging = prepare_run_dir(run_dir, resume)
    _check_resume_config(staging, config_text)
    atomic_write_text(staging / "config.yaml", config_text)
    data.vocab.save(staging / "vocab.json")

    bs, dev = config.train.eval_batch_size, device
    trainer = Trainer(
        model,
        config.train,
        steps_per_epoch=steps_per_epoch,
        step_loss=step_loss,
        validate=lambda: evaluate_model(model, data, "valid", bs, dev),
        work_dir=staging,
        device=device,
    )
    result = fit_or_discard(trainer, staging, resume)
    model.load_state_dict(result.best_state, strict=False)
    metrics = {
        **evaluate_model(model, data, "valid", bs, dev),
        **evaluate_model(model, data, "test", bs, dev),
    }
    baselines = baseline_metrics(data, bs)

    save_weights(staging / WEIGHTS_FILE, model.state_dict())
    total_tokens_per_s = [row["train/tokens_per_s"] for row in result.history]
    manifest = {
        "kind": "backbone",
        "name": config.name,
        "sha256": {name: sha256_file(staging / name) for name in (WEIGHTS_FILE, "vocab.json", "config.yaml")},
        "config_sha256": sha256_text(config_text),
        "parameters": {
            "backbone": count_parameters(model.backbone),
            "output_layer": count_parameters(model.output),
            "total": count_parameters(model),
        },
        "num_items": data.num_items,
        "special_tokens": NUM_SPECIAL_TOKENS,
        "data": {"path": config.data.path, "fingerprint": data.fingerprint, **data.stats()},
        "seed": config.train.seed,
        "best_epoch": result.state.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": round(sum(row["train/seconds"] for row in result.history), 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "tokens_per_s": round(float(np.median(total_tokens_per_s)), 1) if total_tokens_per_s else None,
        "metrics": metrics,
        "baselines": baselines,
        "device": str(device),
        "versions": environment_versions(),
    }
    atomic_write_json(staging / "manifest.json", manifest)
    return finalize_run_dir(staging, run_dir)
