"""The `peterrec` command line. Errors a user can cause print one line and exit 2 (``--debug``: traceback)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from peterrec.allocator import tune_cpu_allocator
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
    tune_cpu_allocator()
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
@config_option
@click.option("--backbone", type=click.Path(), required=True, help="A pretrain run directory.")
@click.option(
    "--strategy",
    default=None,
    help="peterrec, fine_all, fine_cls, fine_last1, fine_last2, peter_zero, scratch.",
)
@set_option
@click.option("--seed", type=int, default=None, help="Initialisation and order seed (the split stays fixed).")
@click.option(
    "--train-fraction", type=float, default=None, help="Finetune on this fraction of training users."
)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Run directory (default checkpoints/<name>-<task>-<strategy>).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last.pt.")
def finetune(config_path, backbone, strategy, overrides, seed, train_fraction, out, resume) -> None:
    """Transfer a pretrained backbone to one task with one strategy; saves only the trained tensors."""
    from peterrec.config import FinetuneConfig, load_config
    from peterrec.reporting import finetune_summary
    from peterrec.transfer import run_finetune

    chosen = [f"strategy.name={strategy}"] if strategy else []
    config = load_config(FinetuneConfig, config_path, [*overrides, *chosen])
    run_dir = run_finetune(config, backbone, out=out, seed=seed, train_fraction=train_fraction, resume=resume)
    click.echo(finetune_summary(run_dir))


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--split", type=click.Choice(["valid", "test"]), default="test")
@click.option("--backbone", type=click.Path(), default=None, help="Backbone run (default: the recorded one).")
def evaluate(run_dir: str, split: str, backbone: str | None) -> None:
    """Recompute a finetuned or pretrained run's metrics from its weights (never echoes stored ones)."""
    from peterrec.usage import evaluate_run

    metrics = evaluate_run(Path(run_dir), split, backbone)
    click.echo(json.dumps(metrics, indent=2))


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--user", "user_ids", multiple=True, help="A user of the run's data (repeatable).")
@click.option("--input", "input_path", type=click.Path(), default=None, help="A click log of users to score.")
@click.option("-k", "top_k", type=int, default=10, show_default=True)
@click.option("--backbone", type=click.Path(), default=None)
def recommend(run_dir, user_ids, input_path, top_k, backbone) -> None:
    """Top-k items (or label probabilities, for profile runs) per user, as JSON lines."""
    from peterrec.usage import recommend_lines

    for line in recommend_lines(Path(run_dir), list(user_ids), input_path, top_k, backbone):
        click.echo(line)


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--input", "input_path", type=click.Path(), required=True, help="A click log of users.")
@click.option("--out", type=click.Path(), required=True, help="Output .npy (users in <out>.users.json).")
@click.option("--backbone", type=click.Path(), default=None)
def embed(run_dir, input_path, out, backbone) -> None:
    """User representations (B, C) from a finetuned or pretrained run."""
    from peterrec.usage import embed_users

    count = embed_users(Path(run_dir), input_path, Path(out), backbone)
    click.echo(f"wrote {count} user vectors to {out}")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def inspect(run_dir: str, as_json: bool) -> None:
    """Show a run's manifest: parameters, metrics, data, versions."""
    from peterrec.checkpoint import read_manifest, verify_files
    from peterrec.reporting import finetune_summary, pretrain_summary

    manifest = read_manifest(run_dir)
    verify_files(run_dir, manifest)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    elif manifest.get("kind") == "finetune":
        click.echo(finetune_summary(Path(run_dir)))
    else:
        click.echo(pretrain_summary(Path(run_dir)))


@main.command()
@click.option("--out", type=click.Path(), default="checkpoints/demo", help="Where the demo runs go.")
def demo(out: str) -> None:
    """The whole pipeline on the bundled sample data (1–2 minutes on a 2-core CPU)."""
    from peterrec.demo import run_demo

    run_demo(Path(out))


@main.command()
@config_option
@click.option("--backbone", type=click.Path(), required=True, help="A pretrain run directory.")
@click.option("--strategies", default="all", show_default=True, help="'all' or a comma list of strategies.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds per run (train.seed, +1, ...).")
@click.option("--train-fraction", "train_fractions", default="1.0", show_default=True, help="e.g. 0.1,1.0")
@click.option("--lr-grid", default=None, help="e.g. 1e-3,3e-4: pick each strategy's lr on validation.")
@set_option
@click.option("--out", type=click.Path(), default=None, help="Default checkpoints/compare-<config>-<task>.")
@click.option("--plot", type=click.Path(), default=None, help="Also draw the main metric to this PNG.")
def compare(config_path, backbone, strategies, seeds, train_fractions, lr_grid, overrides, out, plot) -> None:
    """Finetune several strategies x seeds (x train fractions), each in its own process; one table."""
    from peterrec.compare import parse_float_list, parse_strategies, run_compare
    from peterrec.config import FinetuneConfig, load_config
    from peterrec.errors import ConfigError

    names = parse_strategies(strategies)
    fractions = parse_float_list(train_fractions, "--train-fraction", upper=1.0)
    grid = parse_float_list(lr_grid, "--lr-grid") if lr_grid is not None else None
    if seeds < 1:
        raise ConfigError(f"--seeds: need at least 1, got {seeds}")
    config = load_config(FinetuneConfig, config_path, list(overrides))
    out = out or str(Path("checkpoints") / f"compare-{Path(config_path).stem}-{config.task.type}")
    result = run_compare(config, backbone, names, seeds, fractions, grid, out, plot)
    click.echo(result.table)
    click.echo(f"\nwrote {result.out}/results.md, results.csv, results.json" + (f", {plot}" if plot else ""))


@main.group(name="data")
def data_group() -> None:
    """Prepare task files from public datasets."""


@data_group.command()
@click.option("--input", "input_dir", type=click.Path(), required=True, help="Has .inter, .user, .item.")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="Where the task files go.")
@click.option(
    "--target-genres",
    default="Children's,Animation",
    show_default=True,
    help="Comma list: items with any of these genres form the cold-start target domain.",
)
def movielens(input_dir: str, out_dir: str, target_genres: str) -> None:
    """Build profile labels and the genre cold-start split from MovieLens RecBole atomic files."""
    from peterrec.movielens import build_movielens_tasks

    genres = tuple(g.strip() for g in target_genres.split(",") if g.strip())
    s = build_movielens_tasks(input_dir, out_dir, target_genres=genres)
    click.echo(f"{s['users']} users, {s['items']} items, {s['clicks']} clicks")
    click.echo(
        f"cold start ({', '.join(genres)}): {s['target_items']} target items ({s['target_clicks']} clicks), "
        f"{s['source_items']} source items ({s['source_clicks']} clicks), {s['users_in_both']} users in both"
    )
    for name, counts in s["label_classes"].items():
        click.echo(f"{name}: {len(counts)} classes over {s['labelled_users']} users")
    click.echo(f"wrote {out_dir}/: interactions.csv labels.csv source.csv target.csv summary.json README.md")


if __name__ == "__main__":  # pragma: no cover
    main()
