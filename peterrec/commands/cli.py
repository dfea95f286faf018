"""The `peterrec` command line. Errors a user can cause print one line and exit 2 (``--debug``: traceback).

Each command lives in its own module of :mod:`peterrec.commands` as ``command``; the group imports a
module only when its command runs (or when ``--help`` lists them all).
"""

from __future__ import annotations

import logging
import sys
from importlib import import_module

import click

import peterrec
from peterrec.allocator import tune_cpu_allocator
from peterrec.errors import PeterRecError

logger = logging.getLogger("peterrec")

COMMANDS = {
    name: f"peterrec.commands.{name}"
    for name in (
        "pretrain",
        "finetune",
        "compare",
        "evaluate",
        "recommend",
        "embed",
        "inspect",
        "demo",
        "data",
    )
}


class CommandGroup(click.Group):
    """Loads command modules on demand and turns project errors into one line instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return import_module(COMMANDS[name]).command

    def invoke(self, ctx: click.Context):
        tune_cpu_allocator()  # before any command module allocates (they import torch)
        try:
            return super().invoke(ctx)
        except PeterRecError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=CommandGroup)
@click.version_option(peterrec.__version__, prog_name="peterrec")
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


if __name__ == "__main__":  # pragma: no cover
    main()
