"""The `peterrec` command line. Errors a user can cause print one line and exit 2 (``--debug``: traceback)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from peterrec.errors import PeterRecError

logger = logging.getLogger("peterrec")


class FriendlyGroup(click.Group):
    """Turns project errors into one line on stderr instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (PeterRecError, FloatingPointError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=FriendlyGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Pretrain NextItNet backbones and transfer them with model patches (PeterRec)."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


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


@main.command()
@config_option
@set_option
@click.option("--out", type=click.Path(), default=None, help="Run directory (default checkpoints/<name>).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last.pt.")
def pretrain(config_path: str, overrides: tuple[str, ...], out: str | None, resume: bool) -> None:
    """Pretrain a NextItNet backbone on source-domain click sequences."""
    from peterrec.config import PretrainConfig, load_config
    from peterrec.pretrain import run_pretrain
    from peterrec.reporting import pretrain_summary

    config = load_config(PretrainConfig, config_path, list(overrides))
    run_dir = run_pretrain(config, out=out, resume=resume)
    click.echo(pretrain_summary(run_dir))


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def inspect(run_dir: str, as_json: bool) -> None:
    """Show a run's manifest: parameters, metrics, data, versions."""
    from peterrec.checkpoint import read_manifest, verify_files
    from peterrec.reporting import pretrain_summary

    manifest = read_manifest(run_dir)
    verify_files(run_dir, manifest)
    click.echo(json.dumps(manifest, indent=2) if as_json else pretrain_summary(Path(run_dir)))


@main.command()
@click.option("--out", type=click.Path(), default="checkpoints/demo", help="Where the demo runs go.")
def demo(out: str) -> None:
    """The whole pipeline on the bundled sample data (about a minute on CPU)."""
    from peterrec.demo import run_demo

    run_demo(Path(out))


if __name__ == "__main__":  # pragma: no cover
    main()
