"""`peterrec data ...`: prepare task files from public datasets."""

from __future__ import annotations

import click

from peterrec.data.movielens import OUTPUT_FILES, build_movielens_tasks


@click.group(name="data")
def command() -> None:
    """Prepare task files from public datasets."""


@command.command()
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
    genres = tuple(g.strip() for g in target_genres.split(",") if g.strip())
    s = build_movielens_tasks(input_dir, out_dir, target_genres=genres)
    click.echo(f"{s['users']} users, {s['items']} items, {s['clicks']} clicks")
    click.echo(
        f"cold start ({', '.join(genres)}): {s['target_items']} target items ({s['target_clicks']} clicks), "
        f"{s['source_items']} source items ({s['source_clicks']} clicks), {s['users_in_both']} users in both"
    )
    for name, counts in s["label_classes"].items():
        click.echo(f"{name}: {len(counts)} classes over {s['labelled_users']} users")
    click.echo(f"wrote {out_dir}/: {' '.join(OUTPUT_FILES)}")
