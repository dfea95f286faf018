"""`peterrec demo`: the pipeline on a generated sample, 1–2 minutes on a 2-core CPU.

Everything the demo needs ships inside the package, so it runs from any folder after a regular install
or from a wheel: its two configs (``peterrec/resources/demo/``, copies of ``configs/pretrain/
sample_autoregressive.yaml`` and ``configs/finetune/sample_gender.yaml``, checked equal by a test) and
the sample generator, which writes the same bytes as the repository's ``data/sample/`` (seed 0, also
tested) into the demo folder in about a second.
"""

from __future__ import annotations

import logging
import shutil
from importlib import resources
from pathlib import Path

import click

from peterrec.commands.compare import run_compare
from peterrec.commands.finetune import run_finetune
from peterrec.commands.pretrain import run_pretrain
from peterrec.config import FinetuneConfig, PretrainConfig, load_config
from peterrec.data.synthetic import generate_sample
from peterrec.errors import CheckpointError
from peterrec.reporting import finetune_summary, pretrain_summary

logger = logging.getLogger(__name__)

DEMO_CONFIGS = resources.files("peterrec") / "resources" / "demo"
DEMO_PRETRAIN_CONFIG = "sample_autoregressive.yaml"
DEMO_FINETUNE_CONFIG = "sample_gender.yaml"
DEMO_SEEDS = 2
SAMPLE_SEED = 0
MARKER = ".peterrec-demo"  # marks a folder this command made, so a rerun may replace it


def prepare_out(out: Path) -> None:
    """Create ``out`` for the demo; replace an earlier demo's folder, refuse any other existing one."""
    if out.exists():
        if not (out / MARKER).is_file():
            raise CheckpointError(
                f"{out}: exists and was not made by `peterrec demo`; it is left untouched: "
                "choose another --out (or empty it yourself)"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by `peterrec demo`; a rerun with the same --out replaces this folder\n")


def demo_config(cls, name: str, overrides: list[str]):
    with resources.as_file(DEMO_CONFIGS / name) as path:
        return load_config(cls, path, overrides)


def run_demo(out: Path) -> None:
    """Generate the sample, pretrain on its source clicks, finetune gender prediction, compare strategies."""
    prepare_out(out)
    sample = out / "sample"
    summary = generate_sample(sample, seed=SAMPLE_SEED)
    click.echo(
        f"== 0/3 generated the sample into {sample}: {summary['source_users']} users (seed {SAMPLE_SEED})"
    )
    source = f"data.path={sample / 'source.csv'}"
    config = demo_config(PretrainConfig, DEMO_PRETRAIN_CONFIG, [source])
    click.echo(f"== 1/3 pretrain NextItNet on the source clicks of {config.data.path}")
    backbone_dir = run_pretrain(config, out=out / "backbone")
    click.echo(pretrain_summary(backbone_dir))

    labels = f"task.labels={sample / 'labels.csv'}"
    finetune = demo_config(FinetuneConfig, DEMO_FINETUNE_CONFIG, [source, labels])
    click.echo("\n== 2/3 finetune gender prediction with PeterRec (frozen backbone + serial patches)")
    run_dir = run_finetune(finetune, backbone_dir, strategy="peterrec", out=out / "gender-peterrec")
    click.echo(finetune_summary(run_dir))

    click.echo(f"\n== 3/3 compare all strategies on the same split, {DEMO_SEEDS} seeds (one process per run)")
    result = run_compare(finetune, backbone_dir, seeds=DEMO_SEEDS, out=out / "compare")
    click.echo(result.table)
    click.echo(f"\nruns, tables (results.md/csv/json) and checkpoints are under {out}")


@click.command()
@click.option("--out", type=click.Path(), default="checkpoints/demo", help="Where the demo runs go.")
def command(out: str) -> None:
    """The whole pipeline on a generated sample (1–2 minutes on a 2-core CPU), from any folder."""
    run_demo(Path(out))
