"""`peterrec recommend`: top-k items (or label probabilities) per user from a run, as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import torch

from peterrec.commands.common import backbone_option, user_inputs
from peterrec.new_items import add_items
from peterrec.reporting import markdown_table
from peterrec.runs import load_any


@torch.inference_mode()
def recommend_records(
    run_dir: Path,
    user_ids: list[str],
    input_path: str | None,
    top_k: int,
    backbone: str | None = None,
    items_path: str | None = None,
) -> Iterator[dict]:
    """One record per user: top-k items with scores (ranking runs) or class probabilities (profile runs).

    ``items_path``: an item file whose unknown items are added first, scored from their content alone
    (runs with a content item encoder, :func:`peterrec.new_items.add_items`)."""
    run = load_any(run_dir, backbone)
    if items_path is not None:
        add_items(run, items_path)
    users, inputs = user_inputs(run, user_ids, input_path)
    yield from run.task.recommend(run, users, inputs, top_k)


def recommend_lines(
    run_dir: Path, user_ids: list[str], input_path, top_k: int, backbone=None, items_path=None
) -> Iterator[str]:
    """:func:`recommend_records` as JSON lines (item ids as written, not ``\\u`` escapes)."""
    for record in recommend_records(run_dir, user_ids, input_path, top_k, backbone, items_path):
        yield json.dumps(record, ensure_ascii=False)


def records_table(records: list[dict]) -> str:
    """The records as one markdown table: a row per (user, rank, item, score), or per (user, class)."""
    if records and "items" in records[0]:
        rows = [
            [r["user"], rank + 1, item, score]
            for r in records
            for rank, (item, score) in enumerate(zip(r["items"], r["scores"], strict=True))
        ]
        return markdown_table(["user", "rank", "item", "score"], rows)
    classes = list(records[0]["probabilities"]) if records else []
    rows = [[r["user"], *(r["probabilities"][c] for c in classes)] for r in records]
    return markdown_table(["user", *(f"P({c})" for c in classes)], rows)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--user", "user_ids", multiple=True, help="A user of the run's data (repeatable).")
@click.option("--input", "input_path", type=click.Path(), default=None, help="A click log of users to score.")
@click.option("-k", "top_k", type=int, default=10, show_default=True)
@click.option(
    "--format", "output_format", type=click.Choice(["json", "table"]), default="json", show_default=True
)
@click.option(
    "--items",
    "items_path",
    type=click.Path(),
    default=None,
    help="An item file (item_id + text columns): items the run does not know are scored from their text.",
)
@backbone_option
def command(run_dir, user_ids, input_path, top_k, output_format, items_path, backbone) -> None:
    """Top-k items (or label probabilities, for profile runs) per user, as JSON lines or a table."""
    args = (Path(run_dir), list(user_ids), input_path, top_k, backbone, items_path)
    if output_format == "table":
        click.echo(records_table(list(recommend_records(*args))))
        return
    for line in recommend_lines(*args):
        click.echo(line)
