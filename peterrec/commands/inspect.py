"""`peterrec inspect`: a run's manifest (parameters, metrics, data, versions), its files checked."""

from __future__ import annotations

import json
from pathlib import Path

import click

from peterrec.checkpoint import verify_files
from peterrec.manifest import read_manifest
from peterrec.reporting import finetune_summary, pretrain_summary


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def command(run_dir: str, as_json: bool) -> None:
    """Show a run's manifest: parameters, metrics, data, versions."""
    manifest = read_manifest(run_dir)
    verify_files(run_dir, manifest.sha256)
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False))
    elif manifest.kind == "finetune":
        click.echo(finetune_summary(Path(run_dir)))
    else:
        click.echo(pretrain_summary(Path(run_dir)))
