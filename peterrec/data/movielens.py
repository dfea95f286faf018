"""Build the MovieLens downstream tasks (profile prediction and genre cold start) from RecBole atomic files.

``build_movielens_tasks(input_dir, out_dir)`` reads the ``.inter``, ``.user`` and ``.item`` files of a
MovieLens release in RecBole's atomic format and writes, to ``out_dir``:

* ``interactions.csv`` — every click (``user_id,item_id,timestamp``), in time order (ties keep file order);
* ``labels.csv`` — ``user_id,gender,age,occupation`` for users with clicks; exact ages become the seven
  MovieLens-1M buckets, ages already given as buckets are kept;
* ``source.csv`` / ``target.csv`` — the genre cold-start split: target items are those whose
  genres include any target genre (default Children's or Animation), source items are all the others;
* ``items.csv`` — ``item_id,title,year,genres`` of the clicked items listed in the ``.item`` file, in its
  order (genres as written there; title or year empty where the file has no such column): the item text;
* ``summary.json`` (counts) and ``README.md`` (what the files are; MovieLens may not be redistributed).

Ids stay strings (numbers or titles alike). Genre tokens are matched exactly, ignoring case.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from peterrec.checkpoint import atomic_write_text
from peterrec.data.readers import (
    check_users_have_sequences,
    read_interactions,
    read_item_text,
    read_labels,
)
from peterrec.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_TARGET_GENRES = ("Children's", "Animation")
LABELS = ("gender", "age", "occupation")
GENRE_COLUMNS = ("class", "genre", "genres")
TITLE_COLUMNS = ("movie_title", "title")
YEAR_COLUMNS = ("release_year", "year")
# MovieLens-1M age buckets: (lower edge, name); an exact age falls in the last bucket whose edge it reaches.
AGE_BUCKETS = (
    (0, "<18"),
    (18, "18-24"),
    (25, "25-34"),
    (35, "35-44"),
    (45, "45-49"),
    (50, "50-55"),
    (56, "56+"),
)
OUTPUT_FILES = (
    "interactions.csv",
    "labels.csv",
    "source.csv",
    "target.csv",
    "items.csv",
    "summary.json",
    "README.md",
)


def age_bucket(value: str) -> str:
    """The MovieLens-1M bucket of an exact age (``"24"`` -> ``"18-24"``); a non-numeric value is kept as is.

    ML-1M's own age codes (1, 18, 25, 35, 45, 50, 56) map onto their buckets too.
    """
    try:
        age = float(value)
    except ValueError:
        return value
    if not math.isfinite(age) or age < 0:
        raise ValueError(f"age {value!r} is not a non-negative number")
    name = AGE_BUCKETS[0][1]
    for edge, bucket in AGE_BUCKETS:
        if age >= edge:
            name = bucket
    return name


def split_genres(value: str) -> list[str]:
    """Genre tokens of one item: separated by ``|`` or commas if present, else by whitespace."""
    for separator in ("|", ","):
        if separator in value:
            return [token.strip() for token in value.split(separator) if token.strip()]
    return value.split()


def _find_file(input_dir: str, extension: str) -> str:
    """The one file in ``input_dir`` ending in ``extension``; a DataError if there is none or several."""
    if not os.path.isdir(input_dir):
        raise DataError(
            f"{input_dir}: not a directory; point --input at the folder holding the MovieLens .inter, .user "
            "and .item files (fetch them with ../shared/data/get-movielens.sh ml-100k data/external)"
        )
    found = sorted(name for name in os.listdir(input_dir) if name.lower().endswith(extension))
    if not found:
        present = ", ".join(sorted(os.listdir(input_dir))[:8]) or "nothing"
        raise DataError(
            f"{input_dir}: no {extension} file (found: {present}); the folder needs RecBole atomic files "
            ".inter, .user and .item (fetch them with ../shared/data/get-movielens.sh ml-100k data/external)"
        )
    if len(found) > 1:
        raise DataError(f"{input_dir}: several {extension} files ({', '.join(found)}); keep one per folder")
    return os.path.join(input_dir, found[0])


def _columns(path: str) -> list[str]:
    """Column names of a RecBole atomic file (types stripped), from its first non-blank line."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            header = next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        header = ""  # the reader called next gives the precise error
    return [field.strip().rpartition(":")[0] or field.strip() for field in header.rstrip("\r\n").split("\t")]


def _pick(path: str, columns: Sequence[str], names: Iterable[str], what: str, fix: str) -> str:
    """The first column of ``names`` present (ignoring case), as spelled in the file."""
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    found = ", ".join(repr(c) for c in columns)
    raise DataError(f"{path}: no {what} column (found: {found}); {fix}")


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _format_time(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _read_clicks(path: str) -> tuple[list[str], list[str], list[str]]:
    """Users, items and timestamps (as text) in time order; equal timestamps keep file order."""
    columns = _columns(path)
    fix = "RecBole atomic .inter files name them user_id:token and item_id:token"
    user = _pick(path, columns, ["user_id"], "'user_id'", fix)
    item = _pick(path, columns, ["item_id"], "'item_id'", fix)
    time = next((c for c in columns if c.lower() == "timestamp"), None)
    inter = read_interactions(path, format="recbole", user_column=user, item_column=item, time_column=time)
    if inter.timestamps is None:
        logger.warning("%s: no timestamp column; the file order is taken as the time order", path)
        return inter.users, inter.items, [str(i) for i in range(len(inter))]
    order = np.argsort(inter.timestamps, kind="stable").tolist()
    times = [_format_time(t) for t in inter.timestamps]
    return [inter.users[i] for i in order], [inter.items[i] for i in order], [times[i] for i in order]


def _read_profile(path: str) -> dict[str, dict[str, str]]:
    """``user -> {gender, age, occupation}`` with ages bucketed."""
    columns = _columns(path)
    user = _pick(path, columns, ["user_id"], "'user_id'", "RecBole .user files name it user_id:token")
    lower = {c.lower(): c for c in columns}
    missing = [name for name in LABELS if name not in lower]
    if missing:
        found = ", ".join(repr(c) for c in columns)
        raise DataError(
            f"{path}: no {' / '.join(repr(m) for m in missing)} column (found: {found}); "
            "the .user file needs gender, age and occupation columns (as in MovieLens-100K/1M)"
        )
    per_label = {
        name: read_labels(path, user_column=user, label_column=lower[name], format="recbole")
        for name in LABELS
    }
    profiles: dict[str, dict[str, str]] = {}
    for user_id, age in per_label["age"].items():
        try:
            bucket = age_bucket(age)
        except ValueError as exc:
            raise DataError(f"{path}: user {user_id!r}: {exc}; fix the age or delete the user") from exc
        profiles[user_id] = {
            "gender": per_label["gender"][user_id],
            "age": bucket,
            "occupation": per_label["occupation"][user_id],
        }
    return profiles


def _read_items(path: str) -> dict[str, dict[str, str]]:
    """``item -> {title, year, genres}`` (as written) from a ``.item`` file, in file order.

    The genre column (``class`` or ``genre``) is required; a missing title or year column gives empty values.
    """
    columns = _columns(path)
    item = _pick(path, columns, ["item_id"], "'item_id'", "RecBole .item files name it item_id:token")
    genre = _pick(
        path,
        columns,
        GENRE_COLUMNS,
        "genre",
        "the .item file needs a 'class' or 'genre' column of space- or comma-separated genres",
    )
    lower = {c.lower(): c for c in columns}
    fields = {"genres": genre}
    for field, names in (("title", TITLE_COLUMNS), ("year", YEAR_COLUMNS)):
        column = next((lower[name] for name in names if name in lower), None)
        if column is None:
            logger.warning("%s: no %s column (%s); items.csv leaves it empty", path, field, "/".join(names))
        else:
            fields[field] = column
    values = {
        field: read_item_text(path, item_column=item, text_columns=[column], format="recbole")
        for field, column in fields.items()
    }
    empty: dict[str, str] = {}
    return {
        item_id: {field: values.get(field, empty).get(item_id, "") for field in ("title", "year", "genres")}
        for item_id in values["genres"]
    }


def _readme(summary: dict) -> str:
    s = summary
    genres = " or ".join(s["target_genres"])
    listed = ", ".join(s["target_genres"])
    buckets = ", ".join(b for _, b in AGE_BUCKETS)
    files = [
        (
            "interactions.csv",
            "every click, `user_id,item_id,timestamp`, in time order (ties keep file order); "
            "input of the profile tasks and of next-item pretraining",
        ),
        (
            "labels.csv",
            f"`user_id,gender,age,occupation` for the {s['labelled_users']} users with clicks; "
            f"age in the MovieLens-1M buckets {buckets}",
        ),
        (
            "source.csv",
            f"clicks of all users on source items (genres include none of {listed}); "
            "cold-start pretraining sees only these",
        ),
        ("target.csv", f"clicks on the {s['target_items']} target items (genres include {genres})"),
        (
            "items.csv",
            f"`item_id,title,year,genres` of the {s['items'] - s['items_without_genres']} clicked items "
            "listed in the .item file; the item text of content item encoders",
        ),
        ("summary.json", "the counts below"),
    ]
    table = "\n".join(f"| {name} | {what} |" for name, what in files)
    return (
        "# MovieLens downstream tasks\n\n"
        f"Built by `peterrec data movielens` from {s['input']['inter']}, {s['input']['user']} and "
        f"{s['input']['item']}.\n"
        "**MovieLens may not be redistributed: do not commit or share these files**; anyone can rebuild them "
        "from the official release (see docs/movielens.md).\n\n"
        f"| file | what it is |\n|---|---|\n{table}\n\n"
        "Cold start: a user's input is their source clicks; the training examples are every target click of "
        "training users;\na validation/test user's positive is their last target click in time, ranked "
        f"against all target items.\n{s['users_in_both']} users have clicks in both domains.\n\n"
        f"Counts: {s['users']} users, {s['items']} items, {s['clicks']} clicks; "
        f"{s['source_items']} source items ({s['source_clicks']} clicks), "
        f"{s['target_items']} target items ({s['target_clicks']} clicks).\n"
    )


def build_movielens_tasks(
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    target_genres: Sequence[str] = DEFAULT_TARGET_GENRES,
) -> dict:
    """Write the MovieLens profile and genre cold-start task files to ``out_dir``; return the summary.

    ``input_dir`` holds one ``.inter``, one ``.user`` and one ``.item`` file in RecBole atomic format.
    Target items are the clicked items with any of ``target_genres`` (case-insensitive exact tokens).
    """
    input_dir = os.fspath(input_dir)
    wanted = {g.strip().lower() for g in target_genres if g.strip()}
    if not wanted:
        raise DataError('--target-genres is empty; name at least one genre, e.g. "Children\'s,Animation"')
    paths = {kind: _find_file(input_dir, f".{kind}") for kind in ("inter", "user", "item")}
    users, items, times = _read_clicks(paths["inter"])
    profiles = _read_profile(paths["user"])
    listed = _read_items(paths["item"])
    genres = {item: split_genres(fields["genres"]) for item, fields in listed.items()}

    clicked = list(dict.fromkeys(items))
    known = [item for item in clicked if item in genres]
    if not known:
        raise DataError(
            f"{paths['item']}: none of the {len(clicked)} clicked items (e.g. {clicked[0]!r}) is listed; "
            f"check that {paths['inter']} and {paths['item']} use the same item ids"
        )
    target = {item for item in known if wanted & {g.lower() for g in genres[item]}}
    if not target:
        seen = Counter(g for item in known for g in genres[item])
        examples = ", ".join(repr(g) for g, _ in seen.most_common(8))
        raise DataError(
            f"{paths['item']}: no clicked item has genre {' or '.join(repr(g) for g in target_genres)} "
            f"(genres seen: {examples}); choose --target-genres among them"
        )
    if len(target) == len(clicked):
        raise DataError(
            f"{paths['item']}: every clicked item has one of the target genres, so no source items remain; "
            "choose narrower --target-genres"
        )

    sequences = dict.fromkeys(users)
    kept, skipped = check_users_have_sequences(profiles, sequences, paths["user"])
    rows = list(zip(users, items, times, strict=True))
    source_rows = [row for row in rows if row[1] not in target]
    target_rows = [row for row in rows if row[1] in target]
    source_users = {row[0] for row in source_rows}
    target_users = {row[0] for row in target_rows}
    summary = {
        "input": {kind: os.fspath(path) for kind, path in paths.items()},
        "target_genres": list(target_genres),
        "users": len(sequences),
        "items": len(clicked),
        "clicks": len(rows),
        "items_without_genres": len(clicked) - len(known),
        "source_items": len(clicked) - len(target),
        "target_items": len(target),
        "source_clicks": len(source_rows),
        "target_clicks": len(target_rows),
        "users_with_source": len(source_users),
        "users_with_target": len(target_users),
        "users_in_both": len(source_users & target_users),
        "labelled_users": len(kept),
        "labelled_users_without_clicks": skipped,
        "label_classes": {
            name: dict(Counter(p[name] for p in kept.values()).most_common()) for name in LABELS
        },
    }
    if summary["items_without_genres"]:
        logger.warning(
            "%s: %d clicked items are not listed there; they count as source items",
            paths["item"],
            summary["items_without_genres"],
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = ("user_id", "item_id", "timestamp")
    atomic_write_text(out / "interactions.csv", _csv_text(header, rows))
    atomic_write_text(out / "source.csv", _csv_text(header, source_rows))
    atomic_write_text(out / "target.csv", _csv_text(header, target_rows))
    label_rows = ([user, *(p[name] for name in LABELS)] for user, p in kept.items())
    atomic_write_text(out / "labels.csv", _csv_text(("user_id", *LABELS), label_rows))
    clicked_set = set(clicked)
    item_rows = (
        (item, fields["title"], fields["year"], fields["genres"])
        for item, fields in listed.items()
        if item in clicked_set
    )
    atomic_write_text(out / "items.csv", _csv_text(("item_id", "title", "year", "genres"), item_rows))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "README.md", _readme(summary))
    return summary
