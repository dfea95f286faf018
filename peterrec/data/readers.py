"""Readers for interaction logs, label files and item text.

Every problem a user can cause raises :class:`~peterrec.errors.DataError` with one line naming the file, the
line (1-based, as an editor shows it) where there is one, what is wrong and the fix.

Supported layouts:

* ``csv`` / ``tsv``: a header line, then one row per record, read with Python's ``csv`` module so ids may be
  quoted and contain the separator, quotes (doubled inside quotes), spaces or parentheses.
* ``recbole``: RecBole atomic files (``.inter``, ``.user``, ``.item``): tab-separated, every header field
  typed as ``name:type``; columns are matched by ``name``. Quotes are literal (a value cannot hold a tab).
* the original PeterRec line format, read by :func:`read_peterrec_lines`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from peterrec.choices import TABLE_FORMATS
from peterrec.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

FORMATS = TABLE_FORMATS
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_RECBOLE_EXTENSIONS = (".inter", ".user", ".item")


@dataclass
class Interactions:
    """A click log as parallel columns; ``lines[i]`` is the source line of row ``i`` (for messages)."""

    users: list[str]
    items: list[str]
    timestamps: np.ndarray | None
    path: str
    lines: list[int]

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class _Table:
    """A validated table: header names (types stripped) and rows with exactly one value per column."""

    path: str
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]

    def index(self, name: str, fix: str) -> int:
        """Position of column ``name``; a DataError listing the columns found (and ``fix``) if absent."""
        if name not in self.columns:
            found = ", ".join(repr(c) for c in self.columns)
            raise DataError(f"{self.path}: no column {name!r} (found: {found}); {fix}")
        if self.columns.count(name) > 1:
            raise DataError(f"{self.path} line 1: column {name!r} appears twice in the header; rename one")
        return self.columns.index(name)

    def values(self, column: int, what: str) -> list[str]:
        """Values of one column; an empty value is an error naming its line."""
        out = [row[column] for row in self.rows]
        for value, line in zip(out, self.lines, strict=True):
            if not value:
                raise DataError(
                    f"{self.path} line {line}: empty {_printable(what)}; fill it in or delete the line"
                )
        return out


def _printable(text: str) -> str:
    """A name from a file or a config, safe inside a one-line message (control characters escaped)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _where(path: str, line: int | None) -> str:
    return f"{path} line {line}" if line is not None else path


def _read_text(path: str) -> str:
    """The file decoded as UTF-8 (a byte-order mark is dropped)."""
    if not os.path.exists(path):
        raise DataError(
            f"{path}: file not found; check the path (relative paths start at the working directory)"
        )
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a file; point at the data file inside it")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path} line {line}: byte 0x{raw[exc.start]:02x} at column {column} is not valid UTF-8; "
            "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out)"
        ) from exc


def _resolve_format(path: str, format: str, text: str) -> str:
    """The concrete format: ``format`` itself, or guessed from the file extension for ``auto``."""
    if format not in FORMATS:
        raise ConfigError(f"data.format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format != "auto":
        return format
    extension = os.path.splitext(path)[1].lower()
    if extension in _RECBOLE_EXTENSIONS:
        return "recbole"
    if extension == ".csv":
        return "csv"
    if extension == ".tsv":
        return "tsv"
    if extension == ".txt":
        return "tsv" if "\t" in text.split("\n", 1)[0] else "csv"
    raise DataError(
        f"{path}: cannot tell the format from the extension {extension or '(none)'!r}; "
        "set data.format to csv, tsv or recbole"
    )


def _parse_header(path: str, fields: list[str], format: str) -> list[str]:
    """Column names; RecBole fields must be ``name:type`` and lose their type."""
    names = [f.strip() for f in fields]
    if format != "recbole":
        return names
    out = []
    for name in names:
        base, sep, kind = name.rpartition(":")
        if not sep or not base:
            raise DataError(
                f"{path} line 1: header field {name!r} has no ':type'; RecBole atomic files name every "
                "column 'name:type' (e.g. user_id:token), or set data.format: tsv for a plain header"
            )
        if kind not in RECBOLE_TYPES:
            raise DataError(
                f"{path} line 1: header field {name!r} has unknown type {kind!r}; "
                f"use one of {', '.join(RECBOLE_TYPES)}"
            )
        out.append(base)
    return out


def _csv_reader(text: str, format: str, separator: str | None):
    if separator is not None and len(separator) != 1:
        raise ConfigError(f"data.separator must be a single character, got {separator!r}")
    delimiter = separator or ("," if format == "csv" else "\t")
    quoting = csv.QUOTE_NONE if format == "recbole" else csv.QUOTE_MINIMAL
    return csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True
    ), delimiter


def _field_count_hint(format: str, delimiter: str) -> str:
    if format == "recbole":
        return "each line needs one tab-separated value per header field"
    shown = "tab" if delimiter == "\t" else repr(delimiter)
    return (
        f'wrap values containing a {shown} in double quotes (a quote inside is written ""), or fix the line'
    )


def _read_table(path: str | os.PathLike, format: str = "auto", separator: str | None = None) -> _Table:
    """Decode, parse and validate a header-plus-rows file; blank lines are skipped."""
    path = os.fspath(path)
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty (no header line); the first line must name the columns")
    format = _resolve_format(path, format, text)
    reader, delimiter = _csv_reader(text, format, separator)
    columns: list[str] | None = None
    rows, lines = [], []
    line = 0
    try:
        for fields in reader:
            start, line = line + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if columns is None:
                columns = _parse_header(path, fields, format)
                continue
            if len(fields) != len(columns):
                names = ", ".join(map(_printable, columns))
                raise DataError(
                    f"{path} line {start}: expected {len(columns)} fields ({names}) but found "
                    f"{len(fields)}; {_field_count_hint(format, delimiter)}"
                )
            rows.append([f.strip() for f in fields])
            lines.append(start)
    except csv.Error as exc:
        raise DataError(
            f"{path} line {line + 1}: cannot parse ({exc}); check the quoting: a quoted value must end with "
            'a quote followed by the separator, and a quote inside it is written ""'
        ) from exc
    if not rows:
        raise DataError(f"{path}: has a header but no rows; the file needs at least one data line")
    return _Table(path, columns or [], rows, lines)


def _parse_timestamps(table: _Table, column: int) -> np.ndarray:
    out = np.empty(len(table.rows), dtype=np.float64)
    for i, (row, line) in enumerate(zip(table.rows, table.lines, strict=True)):
        try:
            value = float(row[column])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(
                f"{table.path} line {line}: timestamp {row[column]!r} is not a number; fix the value, "
                "or set data.time_column: null to keep file order"
            )
        out[i] = value
    return out


def read_interactions(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str | None = "timestamp",
    separator: str | None = None,
) -> Interactions:
    """Read a click log (CSV, TSV or RecBole ``.inter``) into parallel user/item/timestamp columns.

    ``time_column=None`` means the file order is the time order. Other columns are ignored.
    """
    table = _read_table(path, format, separator)
    user = table.index(user_column, "set data.user_column to the column holding user ids")
    item = table.index(item_column, "set data.item_column to the column holding item ids")
    timestamps = None
    if time_column is not None:
        fix = "set data.time_column to the time column, or data.time_column: null to keep file order"
        timestamps = _parse_timestamps(table, table.index(time_column, fix))
    users = table.values(user, f"user id ({user_column})")
    items = table.values(item, f"item id ({item_column})")
    return Interactions(users, items, timestamps, table.path, table.lines)


def group_sequences(inter: Interactions) -> dict[str, list[str]]:
    """Each user's items in time order; users in order of first appearance.

    The sort is stable: interactions with equal timestamps keep their file order.
    """
    sequences: dict[str, list[str]] = {user: [] for user in dict.fromkeys(inter.users)}
    if inter.timestamps is None:
        order = range(len(inter.users))
    else:
        order = np.argsort(inter.timestamps, kind="stable").tolist()
    for i in order:
        sequences[inter.users[i]].append(inter.items[i])
    return sequences


def _split_peterrec_line(path: str, line: int, text: str) -> tuple[list[str], list[str]]:
    fields = [f.strip() for f in text.split(",")]
    if "" in fields:
        cut = fields.index("")
        source, target = fields[:cut], fields[cut + 1 :]
    else:
        source, target = fields, []
    while target and not target[-1]:  # a trailing comma is harmless
        target.pop()
    if not source:
        raise DataError(
            f"{path} line {line}: no source items (the line is empty or starts with an empty field); "
            "write 'i1,i2,...' or 'src1,...,,tgt1,...', or delete the line"
        )
    if "" in target:
        raise DataError(
            f"{path} line {line}: more than one empty field; only one empty field may separate source from "
            "target items ('src1,...,,tgt1,...')"
        )
    return source, target


def read_peterrec_lines(path: str | os.PathLike) -> list[tuple[list[str], list[str]]]:
    """Read the original PeterRec format: one anonymous user per line.

    A line is ``i1,i2,...`` (source only; the target list is empty) or ``src1,...,srcN,,tgt1,...`` (an empty
    field separates source from target items). Blank lines at the end of the file are ignored; anywhere else
    they are an error, because line numbers serve as user ids.
    """
    path = os.fspath(path)
    # Only \n, \r\n and \r end a line (as in the CSV reader): str.splitlines would also split at form
    # feeds, \x1c-\x1e, \x85 and U+2028/9, making line numbers (the user ids) disagree with an editor.
    lines = _read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(
            f"{path}: file is empty; write one sequence per line, 'i1,i2,...' or 'src...,,tgt...'"
        )
    return [_split_peterrec_line(path, number, text) for number, text in enumerate(lines, start=1)]


def _check_unique(table: _Table, keys: list[str], values: list[str], what: str) -> dict[str, str]:
    """``key -> value``; a key repeated with a different value is an error naming both lines."""
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for key, value, line in zip(keys, values, table.lines, strict=True):
        if key in out and out[key] != value:
            raise DataError(
                f"{table.path} line {line}: {what} {key!r} already appeared on line {first_line[key]} with a "
                "different value; keep one row per " + what
            )
        out.setdefault(key, value)
        first_line.setdefault(key, line)
    return out


def read_labels(
    path: str | os.PathLike,
    *,
    user_column: str = "user_id",
    label_column: str,
    format: str = "auto",
) -> dict[str, str]:
    """Read ``user -> label`` from a CSV/TSV or RecBole ``.user`` file; labels are kept as strings."""
    table = _read_table(path, format)
    user = table.index(user_column, "set user_column to the column holding user ids")
    label = table.index(label_column, "set label_column to one of them")
    users = table.values(user, f"user id ({user_column})")
    labels = _check_unique(table, users, table.values(label, f"label ({label_column})"), "user")
    classes = sorted(set(labels.values()))
    if len(classes) < 2:
        raise DataError(
            f"{table.path}: label column {label_column!r} has only one class {classes[0]!r}; a classifier "
            "needs at least two (choose another label_column or a file with more users)"
        )
    return labels


def read_item_text(
    path: str | os.PathLike,
    *,
    item_column: str = "item_id",
    text_columns: list[str] | None,
    format: str = "auto",
) -> dict[str, str]:
    """Read ``item -> text`` from a CSV/TSV or RecBole ``.item`` file.

    The text is ``text_columns`` joined with spaces (empty values skipped; None: every column but the item
    id's); an item may have empty text.
    """
    if text_columns is not None and not text_columns:
        raise ConfigError("text_columns is empty; name at least one column holding item text (e.g. title)")
    table = _read_table(path, format)
    item = table.index(item_column, "set item_column to the column holding item ids")
    if text_columns is None:
        text_columns = [name for name in table.columns if name != item_column]
    fix = "set text_columns to columns of this file"
    indices = [table.index(name, fix) for name in text_columns]
    texts = [" ".join(row[i] for i in indices if row[i]) for row in table.rows]
    return _check_unique(table, table.values(item, f"item id ({item_column})"), texts, "item")


def check_users_have_sequences(
    labels: Mapping[str, str], sequences: Mapping[str, object], path: str | os.PathLike
) -> tuple[dict[str, str], int]:
    """Keep the labelled users that have a sequence; the rest are a counted, logged skip.

    Returns ``(kept, skipped)``. A DataError if no labelled user has a sequence (usually mismatched ids).
    """
    kept = {user: label for user, label in labels.items() if user in sequences}
    skipped = len(labels) - len(kept)
    if not kept:
        examples = ", ".join(repr(u) for u in list(labels)[:3])
        raise DataError(
            f"{os.fspath(path)}: none of the {len(labels)} labelled users (e.g. {examples}) has a sequence; "
            "check that the label file and the click log use the same user ids (user_column)"
        )
    if skipped:
        missing = [user for user in labels if user not in sequences][:3]
        logger.warning(
            "%s: skipped %d of %d labelled users with no sequence (e.g. %s)",
            os.fspath(path),
            skipped,
            len(labels),
            ", ".join(repr(u) for u in missing),
        )
    return kept, skipped
