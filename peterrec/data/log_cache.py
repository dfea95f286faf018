"""Large click logs: a streaming reader and a memory-mapped binary cache of the grouped sequences.

The first read of a log streams it row by row (Python's ``csv`` module over the open file, ids mapped to
integers as they come, columns kept in typed arrays, never as Python objects per row), groups the clicks
per user in time order with numpy, and writes ``items.npy`` (int32 item ids, every user's sequence
concatenated), ``offsets.npy`` (int64, users + 1) and ``meta.json`` (user ids, the vocabulary) to a
folder keyed by the sha256 of the file's bytes and the reading options. Later reads map those arrays
with ``np.load(mmap_mode="r")``.

The result is exactly what the in-memory readers give (:func:`~peterrec.data.readers.read_interactions`,
:func:`~peterrec.data.readers.group_sequences` and :meth:`Vocabulary.build` over all sequences): users in
order of first appearance, each user's items sorted stably by time (equal timestamps keep file order),
item ids 4.. by descending count, ties by first appearance in the grouped sequences. On any problem with
the file the streaming reader hands over to the in-memory reader, so the error message is the same
DataError as always.

Where the cache lives: ``PETERREC_CACHE`` (environment) set to ``off`` (or ``0``, ``no``, ``false``)
disables it, set to a folder puts every cache there; otherwise a ``.peterrec-cache/`` folder beside the
log, or ``~/.cache/peterrec`` where that is not writable. Logs smaller than :data:`MIN_CACHE_BYTES` are
read by the streaming reader but not cached (they parse in well under a second).
"""

from __future__ import annotations

import array
import csv
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peterrec.checkpoint import sha256_file, sha256_text
from peterrec.data.readers import (
    _RECBOLE_EXTENSIONS,
    FORMATS,
    _parse_header,
    group_sequences,
    read_interactions,
    read_peterrec_lines,
)
from peterrec.data.vocab import Vocabulary
from peterrec.errors import DataError
from peterrec.tokens import NUM_SPECIAL_TOKENS

logger = logging.getLogger(__name__)

CACHE_FORMAT = "peterrec-log-cache/1"
CACHE_ENV = "PETERREC_CACHE"
CACHE_FOLDER = ".peterrec-cache"
MIN_CACHE_BYTES = 16 << 20
_OFF = ("off", "0", "no", "false", "none")


@dataclass
class UserSequences:
    """Every user's item ids (frequency-ordered vocabulary, ids 4..) in time order, as one CSR array.

    ``items[offsets[u]:offsets[u + 1]]`` is user ``users[u]``'s sequence, oldest first. ``items`` may be a
    read-only memory map.
    """

    items: np.ndarray  # int32
    offsets: np.ndarray  # int64, len(users) + 1
    users: list[str]
    vocab: Vocabulary
    cached: bool = False  # True when read from a cache written earlier

    def __len__(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]


# ------------------------------------------------------------------------------------------ the key


def reading_options(config) -> dict:
    """The options that change what is read from a file (not min_length or max_len, applied later)."""
    return {
        "format": config.format,
        "user_column": config.user_column,
        "item_column": config.item_column,
        "time_column": config.time_column,
        "separator": config.separator,
    }


def cache_key(file_sha256: str, config) -> str:
    options = json.dumps(reading_options(config), sort_keys=True)
    return sha256_text(f"{CACHE_FORMAT}\n{file_sha256}\n{options}")[:32]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def cache_root(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder caches of ``path`` go to, or None when caching is off or nothing is writable."""
    setting = os.environ.get(CACHE_ENV, "").strip() if cache_dir is None else os.fspath(cache_dir)
    if setting.lower() in _OFF and setting:
        return None
    candidates = (
        [Path(setting)]
        if setting
        else [Path(path).resolve().parent / CACHE_FOLDER, Path.home() / ".cache" / "peterrec"]
    )
    for folder in candidates:
        if _writable(folder):
            return folder
    logger.warning("no writable folder for the log cache (tried %s); reading without one", candidates[0])
    return None


# ------------------------------------------------------------------------------------------ reading


class _Fallback(Exception):
    """The streaming reader met something it leaves to the in-memory reader (errors, rare layouts)."""


def _stream_format(path: str, format: str) -> str:
    if format not in FORMATS:
        raise _Fallback
    if format != "auto":
        return format
    extension = os.path.splitext(path)[1].lower()
    if extension in _RECBOLE_EXTENSIONS:
        return "recbole"
    if extension in (".csv", ".tsv"):
        return extension[1:]
    if extension == ".txt":
        with open(path, "rb") as f:
            head = f.readline()  # binary: ends at b"\n" only, as text.split("\n") does
        try:
            first = head.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _Fallback from None
        return "tsv" if "\t" in first else "csv"
    raise _Fallback


def _stream(path: str, config) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str], list[str]]:
    """(user index, item index, timestamps or None, user strings, item strings) in file order."""
    format = _stream_format(path, config.format)
    separator = config.separator
    if separator is not None and len(separator) != 1:
        raise _Fallback
    delimiter = separator or ("," if format == "csv" else "\t")
    quoting = csv.QUOTE_NONE if format == "recbole" else csv.QUOTE_MINIMAL
    user_ids: dict[str, int] = {}
    item_ids: dict[str, int] = {}
    users = array.array("i")
    items = array.array("i")
    times = array.array("d")
    timed = config.time_column is not None
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting, strict=True)
            for fields in reader:
                if any(x.strip() for x in fields):
                    columns = _parse_header(path, fields, format)
                    break
            else:
                raise _Fallback  # empty file
            wanted = [config.user_column, config.item_column] + ([config.time_column] if timed else [])
            if any(columns.count(name) != 1 for name in wanted):
                raise _Fallback
            ucol, icol = columns.index(config.user_column), columns.index(config.item_column)
            tcol = columns.index(config.time_column) if timed else 0
            width = len(columns)
            add_user, add_item, add_time = users.append, items.append, times.append
            user_get, item_get = user_ids.get, item_ids.get
            for fields in reader:
                if len(fields) != width:
                    if any(x.strip() for x in fields):
                        raise _Fallback
                    continue
                user = fields[ucol].strip()
                if not user:
                    if any(x.strip() for x in fields):
                        raise _Fallback
                    continue
                item = fields[icol].strip()
                if not item:
                    raise _Fallback
                if timed:
                    add_time(float(fields[tcol].strip()))
                u = user_get(user)
                if u is None:
                    u = user_ids[user] = len(user_ids)
                add_user(u)
                i = item_get(item)
                if i is None:
                    i = item_ids[item] = len(item_ids)
                add_item(i)
    except (csv.Error, UnicodeDecodeError, ValueError, OSError, DataError):
        raise _Fallback from None
    if not users:
        raise _Fallback
    stamps = np.frombuffer(times, dtype=np.float64) if timed else None
    if stamps is not None and not np.isfinite(stamps).all():
        raise _Fallback
    return (
        np.frombuffer(users, dtype=np.int32),
        np.frombuffer(items, dtype=np.int32),
        stamps,
        list(user_ids),
        list(item_ids),
    )


def frequency_order(items: np.ndarray, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(ranked item indices, their counts) as :meth:`Vocabulary.build` orders them over ``items``.

    Descending count; ties by first position in ``items``. Indices never seen in ``items`` are left out.
    """
    counts = np.bincount(items, minlength=num_items)
    seen, first = np.unique(items, return_index=True)
    ranked = seen[np.lexsort((first, -counts[seen]))]
    return ranked, counts[ranked]


def group(
    user_index: np.ndarray,
    item_index: np.ndarray,
    stamps: np.ndarray | None,
    users: list[str],
    item_names: list[str],
) -> UserSequences:
    """Group file-order columns into per-user time-ordered sequences with a frequency-ordered vocabulary."""
    order = np.argsort(stamps, kind="stable") if stamps is not None else None
    if order is None:
        order = np.argsort(user_index, kind="stable")
    else:
        order = order[np.argsort(user_index[order], kind="stable")]
    grouped = item_index[order]
    del order
    lengths = np.bincount(user_index, minlength=len(users))
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ranked, counts = frequency_order(grouped, len(item_names))
    new_id = np.zeros(len(item_names), dtype=np.int32)
    new_id[ranked] = np.arange(len(ranked), dtype=np.int32) + NUM_SPECIAL_TOKENS
    vocab = Vocabulary([item_names[i] for i in ranked.tolist()], counts)
    return UserSequences(new_id[grouped], offsets, users, vocab)


def from_sequences(sequences: dict[str, list[str]]) -> UserSequences:
    """The CSR form of already grouped string sequences (the in-memory readers' output)."""
    users = list(sequences)
    vocab = Vocabulary.build(sequences[u] for u in users)
    lengths = np.array([len(sequences[u]) for u in users], dtype=np.int64)
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = vocab._ids
    flat = np.fromiter(
        (ids[item] for u in users for item in sequences[u]), dtype=np.int32, count=int(offsets[-1])
    )
    return UserSequences(flat, offsets, users, vocab)


def read_in_memory(config) -> dict[str, list[str]]:
    """The in-memory readers (every layout, every error message)."""
    if config.format == "peterrec_lines":
        rows = read_peterrec_lines(config.path)
        return {f"line{i + 1}": src for i, (src, _target) in enumerate(rows) if src}
    interactions = read_interactions(
        config.path,
        format=config.format,
        user_column=config.user_column,
        item_column=config.item_column,
        time_column=config.time_column,
        separator=config.separator,
    )
    return group_sequences(interactions)


def read_sequences(config) -> UserSequences:
    """Stream and group the log (no cache); the in-memory readers for peterrec_lines and on any problem."""
    path = os.fspath(config.path)
    if config.format != "peterrec_lines":
        try:
            return group(*_stream(path, config))
        except _Fallback:
            pass
    return from_sequences(read_in_memory(config))


# ------------------------------------------------------------------------------------------ the cache


def _write(folder: Path, data: UserSequences, meta: dict) -> None:
    """Write the cache into a temporary folder beside ``folder``, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        np.save(tmp / "items.npy", np.ascontiguousarray(data.items, dtype=np.int32))
        np.save(tmp / "offsets.npy", np.ascontiguousarray(data.offsets, dtype=np.int64))
        body = {
            **meta,
            "format": CACHE_FORMAT,
            "users": data.users,
            "vocab": data.vocab.to_dict(),
            "clicks": int(len(data.items)),
        }
        with open(tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump(body, f, ensure_ascii=False)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # not another process winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read(folder: Path) -> UserSequences:
    """Map a cache written by :func:`_write`; ValueError (or OSError) if anything is inconsistent."""
    with open(folder / "meta.json", encoding="utf-8") as f:
        meta = json.load(f)
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise ValueError("unknown cache format")
    items = np.load(folder / "items.npy", mmap_mode="r", allow_pickle=False)
    offsets = np.load(folder / "offsets.npy", allow_pickle=False)
    users = meta["users"]
    vocab = Vocabulary.from_dict(meta["vocab"], source=str(folder / "meta.json"))
    ok = (
        items.dtype == np.int32
        and items.ndim == 1
        and offsets.dtype == np.int64
        and offsets.shape == (len(users) + 1,)
        and len(items) == meta["clicks"]
        and (len(users) == 0 or (offsets[0] == 0 and offsets[-1] == len(items)))
        and bool(np.all(np.diff(offsets) > 0))
        and isinstance(users, list)
    )
    if ok and len(items):
        ok = int(items.min()) >= NUM_SPECIAL_TOKENS and int(items.max()) < len(vocab) + NUM_SPECIAL_TOKENS
    if not ok:
        raise ValueError("inconsistent arrays")
    return UserSequences(np.asarray(items), offsets, users, vocab, cached=True)


def load_or_build(
    config,
    *,
    file_sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    min_bytes: int | None = None,
) -> UserSequences:
    """The log's grouped sequences: from the cache when one matches, else read (and cached when large).

    ``cache_dir`` overrides ``PETERREC_CACHE``; ``min_bytes`` the size below which nothing is cached.
    """
    path = os.fspath(config.path)
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found; set data.path to your click log")
    limit = MIN_CACHE_BYTES if min_bytes is None else min_bytes
    root = None
    if config.format != "peterrec_lines" and os.path.getsize(path) >= limit:
        root = cache_root(path, cache_dir)
    if root is None:
        return read_sequences(config)
    folder = root / cache_key(file_sha256 or sha256_file(path), config)
    if (folder / "meta.json").is_file():
        try:
            return _read(folder)
        except Exception as exc:  # noqa: BLE001 - any damage to the cache means: rebuild it
            logger.warning("%s: log cache %s is unreadable (%s); rebuilding it", path, folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    data = read_sequences(config)
    try:
        _write(folder, data, {"source": os.path.abspath(path), "options": reading_options(config)})
        logger.info("%s: wrote the log cache %s", path, folder)
    except OSError as exc:
        logger.warning("%s: cannot write the log cache %s (%s); continuing without it", path, folder, exc)
    return data


def time_ordered_strings(data: UserSequences) -> dict[str, list[str]]:
    """``{user: [item strings]}``, the in-memory readers' layout (for tests and small logs)."""
    names = data.vocab.items
    out = {}
    for u, user in enumerate(data.users):
        out[user] = [names[i - NUM_SPECIAL_TOKENS] for i in data.sequence(u).tolist()]
    return out


__all__ = [
    "UserSequences",
    "cache_key",
    "cache_root",
    "frequency_order",
    "load_or_build",
    "read_sequences",
    "time_ordered_strings",
]
