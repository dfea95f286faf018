"""`peterrec embed`: user representations (B, C) from a run, as a .npy file and the user ids beside it."""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from peterrec.checkpoint import atomic_save_npy, atomic_write_text
from peterrec.commands.common import backbone_option, user_inputs
from peterrec.runs import load_any


@torch.inference_mode()
def embed_users(run_dir: Path, input_path: str, out: Path, backbone=None) -> int:
    """Write (users, C) float32 representations to ``out`` and the user ids beside it."""
    run = load_any(run_dir, backbone)
    users, inputs = user_inputs(run, [], input_path)
    vectors = run.task.user_vectors(run, inputs)
    atomic_save_npy(out, vectors.float().numpy())
    atomic_write_text(out.with_suffix(".users.json"), json.dumps(users, ensure_ascii=False))
    return len(users)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--input", "input_path", type=click.Path(), required=True, help="A click log of users.")
@click.option("--out", type=click.Path(), required=True, help="Output .npy (users in <out>.users.json).")
@backbone_option
def command(run_dir, input_path, out, backbone) -> None:
    """User representations (B, C) from a finetuned or pretrained run."""
    count = embed_users(Path(run_dir), input_path, Path(out), backbone)
    click.echo(f"wrote {count} user vectors to {out}")
