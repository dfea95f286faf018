"""`peterrec demo`: the pipeline on the bundled generated sample, small enough for a minute on CPU."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import click

from peterrec.config import PretrainConfig, load_config
from peterrec.errors import DataError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
DEMO_PRETRAIN_CONFIG = REPO_ROOT / "configs" / "pretrain" / "sample_autoregressive.yaml"


def sample_path(name: str) -> Path:
    path = SAMPLE_DIR / name
    if not path.is_file():
        raise DataError(
            f"{path}: bundled sample not found; run from a source checkout installed with -e, "
            "or regenerate it with `python data/make_sample.py`"
        )
    return path


def run_demo(out: Path) -> None:
    """Pretrain on the sample's source clicks and print the model beside its baselines."""
    from peterrec.pretrain import run_pretrain
    from peterrec.reporting import pretrain_summary

    if out.exists():
        shutil.rmtree(out)
    overrides = [f"data.path={sample_path('source.csv')}"]
    config = load_config(PretrainConfig, DEMO_PRETRAIN_CONFIG, overrides)
    click.echo(f"== 1. pretrain NextItNet on {config.data.path}")
    backbone_dir = run_pretrain(config, out=out / "backbone")
    click.echo(pretrain_summary(backbone_dir))
