"""`peterrec demo`: the pipeline on the bundled generated sample, 1–2 minutes on a 2-core CPU."""

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
DEMO_FINETUNE_CONFIG = REPO_ROOT / "configs" / "finetune" / "sample_gender.yaml"
DEMO_SEEDS = 2


def sample_path(name: str) -> Path:
    path = SAMPLE_DIR / name
    if not path.is_file():
        raise DataError(
            f"{path}: bundled sample not found; run from a source checkout installed with -e, "
            "or regenerate it with `python data/make_sample.py`"
        )
    return path


def run_demo(out: Path) -> None:
    """Pretrain on the sample's source clicks, finetune gender prediction, compare every strategy."""
    from peterrec.compare import run_compare
    from peterrec.config import FinetuneConfig
    from peterrec.pretrain import run_pretrain
    from peterrec.reporting import finetune_summary, pretrain_summary
    from peterrec.transfer import run_finetune

    if out.exists():
        shutil.rmtree(out)
    source = f"data.path={sample_path('source.csv')}"
    config = load_config(PretrainConfig, DEMO_PRETRAIN_CONFIG, [source])
    click.echo(f"== 1/3 pretrain NextItNet on the source clicks of {config.data.path}")
    backbone_dir = run_pretrain(config, out=out / "backbone")
    click.echo(pretrain_summary(backbone_dir))

    labels = f"task.labels={sample_path('labels.csv')}"
    finetune = load_config(FinetuneConfig, DEMO_FINETUNE_CONFIG, [source, labels])
    click.echo("\n== 2/3 finetune gender prediction with PeterRec (frozen backbone + serial patches)")
    run_dir = run_finetune(finetune, backbone_dir, strategy="peterrec", out=out / "gender-peterrec")
    click.echo(finetune_summary(run_dir))

    click.echo(f"\n== 3/3 compare all strategies on the same split, {DEMO_SEEDS} seeds (one process per run)")
    result = run_compare(finetune, backbone_dir, seeds=DEMO_SEEDS, out=out / "compare")
    click.echo(result.table)
    click.echo(f"\nruns, tables (results.md/csv/json) and checkpoints are under {out}")
