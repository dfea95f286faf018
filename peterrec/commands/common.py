"""Options and helpers the command modules share."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click
import torch

from peterrec.checkpoint import environment_versions, finalize_run_dir
from peterrec.config import DataConfig
from peterrec.data.next_item import read_user_sequences
from peterrec.errors import DataError

config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(), required=True, help="YAML config file."
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. train.lr=3e-4.",
)
backbone_option = click.option(
    "--backbone", type=click.Path(), default=None, help="Backbone run (default: the one the run recorded)."
)


def user_sequences(run, user_ids: list[str], input_path: str | None) -> dict[str, list[str]]:
    """Click sequences of the requested users (all users when none are named), from ``input_path`` or the
    run's own data file."""
    data: DataConfig = run.config.data
    if input_path is not None:
        data = dataclasses.replace(data, path=str(input_path), format="auto")
    sequences = read_user_sequences(data)
    if not user_ids:
        return sequences
    missing = [u for u in user_ids if u not in sequences]
    if missing:
        raise DataError(
            f"{data.path}: no clicks for user '{missing[0]}'; pick a user of that file or pass --input"
        )
    return {u: sequences[u] for u in user_ids}


def user_inputs(run, user_ids: list[str], input_path: str | None) -> tuple[list[str], torch.Tensor]:
    """(user ids, model inputs) for a loaded run, encoded as its item encoder maps items."""
    sequences = user_sequences(run, user_ids, input_path)
    encoded = [run.backbone.item_encoder.encode(run.vocab, items) for items in sequences.values()]
    return list(sequences), run.task.model_inputs(run, encoded)


def training_facts(result, started: float, device: torch.device, seed: int, precision: str) -> dict:
    """The manifest fields every training command records: seed, epochs, times, device, the precision
    training ran in (the trainer's, ``auto`` resolved), versions."""
    return {
        "seed": seed,
        "best_epoch": result.state.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": round(sum(row["train/seconds"] for row in result.history), 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
        "precision": precision,
        "versions": environment_versions(),
    }


def finish_run(manifest, staging: Path, run_dir: Path) -> Path:
    """Write the manifest last, then move the complete run into place."""
    manifest.write(staging)
    return finalize_run_dir(staging, run_dir)
