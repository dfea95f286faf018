"""Property-based tests of the readers and the config loader.

Arbitrary bytes, random truncations and column (or key) shuffles of a valid file give a correct parse or one
clear error (a :class:`PeterRecError` with a non-empty one-line message), never another exception.
Derandomized, so a CI run is reproducible; ``FUZZ_EXAMPLES`` scales every test (default 1).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peterrec.config import FinetuneConfig, PretrainConfig, dump_config, load_config, parse_override
from peterrec.data.readers import read_interactions, read_item_text, read_labels, read_peterrec_lines
from peterrec.errors import PeterRecError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
CONFIGS = sorted((REPO_ROOT / "configs").glob("*/*.yaml"))


def fuzz(examples: int):
    """Reproducible settings; ``tmp_path_factory`` is session-scoped, so reusing one file is fine."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def parse_or_clear_error(call, *args, **kwargs):
    """``call(...)``, or None if it raised a PeterRecError with a one-line message; anything else fails."""
    try:
        return call(*args, **kwargs)
    except PeterRecError as exc:
        message = str(exc)
        assert message.strip(), f"{type(exc).__name__} with an empty message"
        assert "\n" not in message, f"multi-line message: {message!r}"
        return None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ----------------------------------------------------------------------------------------------- tables

HEADER = ["user_id", "item_id", "timestamp"]
ROWS = [[f"u{u}", f"i{(u * 5 + t) % 11}", str(100 + 10 * u + t)] for u in range(4) for t in range(3)]
ROWS[3][1] = "i,with comma"  # quoted values must survive a round trip
ROWS[4][1] = 'say "hi"'


def csv_text(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


VALID_CSV = csv_text(HEADER, ROWS).encode()
VALID_INTER = (
    "user_id:token\titem_id:token\ttimestamp:float\n"
    + "".join("\t".join(r) + "\n" for r in ROWS if "," not in r[1])
).encode()

# Variants of a valid file: the layout, the file name and the reader arguments.
TABLE_READERS = [
    ("log.csv", VALID_CSV, read_interactions, {}),
    ("log.inter", VALID_INTER, read_interactions, {}),
    ("log.tsv", csv_text(HEADER, ROWS, "\t").encode(), read_interactions, {"time_column": None}),
    (
        "labels.csv",
        (REPO_ROOT / "data/sample/labels.csv").read_bytes(),
        read_labels,
        {"label_column": "gender"},
    ),
    (
        "items.csv",
        csv_text(
            ["item_id", "title", "genre"], [["i1", "A, b", "x"], ["i2", "", "y"], ["i3", "c", ""]]
        ).encode(),
        read_item_text,
        {"text_columns": ["title", "genre"]},
    ),
    ("lines.txt", b"i1,i2,i3\ni4,i5,,t1,t2\ni6,i7,\n\n", read_peterrec_lines, {}),
]
TABLE_IDS = [name for name, *_ in TABLE_READERS]


def write(scratch: Path, name: str, data: bytes) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, valid, reader, kwargs", TABLE_READERS, ids=TABLE_IDS)
def test_valid_files_parse(scratch, name, valid, reader, kwargs):
    assert reader(write(scratch, name, valid), **kwargs)


@pytest.mark.parametrize("name, valid, reader, kwargs", TABLE_READERS, ids=TABLE_IDS)
@fuzz(40)
@given(
    data=st.binary(max_size=300)
    | st.text(alphabet=',\t\n\r":\ufeff ai1_.-', max_size=80).map(lambda t: t.encode("utf-8"))
)
def test_arbitrary_bytes(scratch, name, valid, reader, kwargs, data):
    parse_or_clear_error(reader, write(scratch, name, data), **kwargs)


@pytest.mark.parametrize("name, valid, reader, kwargs", TABLE_READERS, ids=TABLE_IDS)
@fuzz(40)
@given(data=st.data())
def test_mutated_valid_file(scratch, name, valid, reader, kwargs, data):
    """A valid file with a few bytes replaced, inserted or deleted: the closest thing to real damage."""
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(raw)), label="at")
        byte = data.draw(st.sampled_from(b',\t\n\r"\x00:\xff\xe9 ax1-.'), label="byte")
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="action")
        if action == "insert" or at == len(raw):
            raw.insert(at, byte)
        elif action == "replace":
            raw[at] = byte
        else:
            del raw[at]
    parse_or_clear_error(reader, write(scratch, name, bytes(raw)), **kwargs)


@pytest.mark.parametrize("name, valid, reader, kwargs", TABLE_READERS, ids=TABLE_IDS)
@fuzz(30)
@given(fraction=st.floats(0, 1))
def test_truncation(scratch, name, valid, reader, kwargs, fraction):
    """Cut at any byte (even inside a UTF-8 character or a quoted value): a parse of a prefix, or an error."""
    cut = round(len(valid) * fraction)
    result = parse_or_clear_error(reader, write(scratch, name, valid[:cut]), **kwargs)
    if result is None:
        return
    full = reader(write(scratch, name, valid), **kwargs)
    n = len(result)
    assert n <= len(full)
    # Every record but the last, possibly cut, one is exactly the record of the full file.
    if reader is read_interactions:
        assert result.users[: n - 1] == full.users[: n - 1]
        assert result.items[: n - 1] == full.items[: n - 1]
        assert result.lines == full.lines[:n]
    elif isinstance(result, dict):
        assert list(result.items())[: n - 1] == list(full.items())[: n - 1]
    else:
        assert result[: n - 1] == full[: n - 1]


@fuzz(30)
@given(order=st.permutations(range(3)), extra=st.booleans())
def test_csv_column_shuffle_keeps_the_interactions(scratch, order, extra):
    header = [HEADER[i] for i in order] + (["rating"] if extra else [])
    rows = [[row[i] for i in order] + (["5"] if extra else []) for row in ROWS]
    shuffled = read_interactions(write(scratch, "shuffled.csv", csv_text(header, rows).encode()))
    reference = read_interactions(write(scratch, "log.csv", VALID_CSV))
    assert shuffled.users == reference.users
    assert shuffled.items == reference.items
    assert shuffled.timestamps.tolist() == reference.timestamps.tolist()


@fuzz(30)
@given(order=st.permutations(range(3)), rows=st.permutations(range(8)))
def test_label_column_and_row_shuffle(scratch, order, rows):
    text = (REPO_ROOT / "data/sample/labels.csv").read_text().splitlines()[:9]
    table = [line.split(",") for line in text]
    body = [table[1 + r] for r in rows]
    shuffled = [[line[i] for i in order] for line in [table[0], *body]]
    path = write(scratch, "labels.csv", csv_text(shuffled[0], shuffled[1:]).encode())
    reference = dict(row[:2] for row in table[1:])
    labels = parse_or_clear_error(read_labels, path, label_column="gender")
    if labels is None:  # only if the first eight users happened to share one class
        assert len(set(reference.values())) < 2
        return
    assert labels == reference


@fuzz(40)
@given(
    pairs=st.lists(
        st.tuples(st.text(min_size=1, max_size=5), st.text(min_size=1, max_size=5)), min_size=1, max_size=6
    ),
)
def test_any_ids_round_trip_through_csv(scratch, pairs):
    """Ids holding commas, quotes, spaces or any Unicode: read back as written (outer spaces stripped)."""
    rows = [[u, i, str(t)] for t, (u, i) in enumerate(pairs)]
    result = parse_or_clear_error(
        read_interactions, write(scratch, "ids.csv", csv_text(HEADER, rows).encode())
    )
    if result is None:
        return
    assert result.users == [u.strip() for u, _, _ in rows]
    assert result.items == [i.strip() for _, i, _ in rows]


# Any character but the separators (a leading byte-order mark is dropped as an encoding mark, by design).
ITEM_ID = st.text(
    st.characters(blacklist_characters=",\r\n\ufeff", blacklist_categories=["Cs"]), min_size=1, max_size=4
)


@fuzz(40)
@given(
    users=st.lists(
        st.tuples(
            st.lists(ITEM_ID.filter(lambda t: t.strip() == t), min_size=1, max_size=4),
            st.lists(ITEM_ID.filter(lambda t: t.strip() == t), max_size=3),
        ),
        min_size=1,
        max_size=5,
    ),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_peterrec_lines_round_trip(scratch, users, newline):
    """Any item ids (no comma or line break, no outer spaces) read back as written, one user per line."""
    text = newline.join(",".join(src) + (",," + ",".join(tgt) if tgt else "") for src, tgt in users)
    assert read_peterrec_lines(write(scratch, "lines.txt", text.encode())) == users


# ----------------------------------------------------------------------------------------------- configs

CONFIG_CASES = [(PretrainConfig if p.parent.name == "pretrain" else FinetuneConfig, p) for p in CONFIGS]
CONFIG_IDS = [f"{p.parent.name}/{p.name}" for p in CONFIGS]


def load_or_clear_error(scratch: Path, cls, path: Path | None, overrides=()):
    """Load, or a clear error; whatever loads must also dump and load again to the same config."""
    config = parse_or_clear_error(load_config, cls, path, list(overrides))
    if config is not None:
        again = write(scratch, "dumped.yaml", dump_config(config).encode())
        assert load_config(cls, again) == config
    return config


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig])
@fuzz(60)
@given(data=st.binary(max_size=200))
def test_config_arbitrary_bytes(scratch, cls, data):
    load_or_clear_error(scratch, cls, write(scratch, "fuzz.yaml", data))


YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from([".nan", "-.inf", "1e-3", "0x10", "~", "2001-01-01", "[", "{a: 1}"]),
)
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig])
@fuzz(60)
@given(data=st.data())
def test_config_any_value_at_a_real_key(scratch, cls, data):
    """Any YAML value (or a nested structure) at a key the config has, or at a made-up key."""
    defaults = cls()
    sections = sorted(name for name, value in vars(defaults).items() if dataclasses.is_dataclass(value))
    section = data.draw(st.sampled_from(sections), label="section")
    fields = sorted(vars(getattr(defaults, section)))
    key = data.draw(st.sampled_from(fields) | st.text(max_size=5), label="key")
    value = data.draw(YAML_VALUES, label="value")
    text = yaml.safe_dump({section: {key: value}})
    load_or_clear_error(scratch, cls, write(scratch, "value.yaml", text.encode()))


@pytest.mark.parametrize("cls, path", CONFIG_CASES, ids=CONFIG_IDS)
@fuzz(12)
@given(fraction=st.floats(0, 1))
def test_config_truncation(scratch, cls, path, fraction):
    raw = path.read_bytes()
    load_or_clear_error(scratch, cls, write(scratch, "cut.yaml", raw[: round(len(raw) * fraction)]))


@pytest.mark.parametrize("cls, path", CONFIG_CASES, ids=CONFIG_IDS)
@fuzz(8)
@given(seed=st.integers(0, 2**32 - 1))
def test_config_key_shuffle_loads_the_same(scratch, cls, path, seed):
    """Sections and keys in any order are the same config."""
    values = yaml.safe_load(path.read_text())
    rng = random.Random(seed)

    def shuffled(node):
        if not isinstance(node, dict):
            return node
        keys = list(node)
        rng.shuffle(keys)
        return {k: shuffled(node[k]) for k in keys}

    text = yaml.safe_dump(shuffled(values), sort_keys=False)
    assert load_config(cls, write(scratch, "shuffled.yaml", text.encode())) == load_config(cls, path)


@fuzz(100)
@given(text=st.text(max_size=40))
def test_parse_override_any_text(text):
    result = parse_or_clear_error(parse_override, text)
    if result is not None:
        path, _ = result
        assert path and all(path)


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig])
@fuzz(60)
@given(
    key=st.sampled_from(
        ["train.lr", "train.epochs", "model.dilations", "data", "task.split", "strategy.lr.peterrec"]
    )
    | st.text(max_size=12),
    value=st.text(max_size=12),
)
def test_override_any_value(scratch, cls, key, value):
    load_or_clear_error(scratch, cls, None, [f"{key}={value}"])


# ------------------------------------------------------------------------ inputs that once gave a traceback


@pytest.mark.parametrize(
    "text, phrase",
    [
        (b"\x00", "line 1: not valid YAML (character #x0000 is not allowed"),
        (b"train:\n  lr: 1e-3\n  \x1b: 1\n", "line 3: not valid YAML (character #x001b is not allowed"),
        (b"[" * 1500, "nested too deeply"),
        (b"1: a\nfoo: b\n", "unknown key '1'"),
        (b"~: 1\n", "unknown key 'None'"),
        (b"train:\n  lr: " + b"9" * 400 + b"\n", "train.lr must be a finite number > 0, got inf"),
        (b'data:\n  "\\n": 1\n', r"unknown key 'data.\n'"),
        (b'strategy:\n  lr: {"a\\nb": 0}\n', r"strategy.lr.a\nb must be"),
        (b'train:\n  monitor: "valid/\\n"\n', r"train.monitor 'valid/\n' is not"),
    ],
    ids=[
        "nul-byte",
        "escape-char",
        "deep-nesting",
        "int-and-str-keys",
        "null-key",
        "huge-int-float",
        "newline-key",
        "newline-mapping-key",
        "newline-value",
    ],
)
def test_config_inputs_found_by_fuzzing(scratch, text, phrase):
    cls = FinetuneConfig if text.startswith(b"strategy") else PretrainConfig
    with pytest.raises(PeterRecError) as info:
        load_config(cls, write(scratch, "found.yaml", text))
    message = str(info.value)
    assert "\n" not in message and phrase in message, message


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("train.lr=\x1b", "value is not valid YAML (character #x001b is not allowed"),
        ("train.lr=" + "[" * 1500, "nested too deeply"),
    ],
    ids=["escape-char", "deep-nesting"],
)
def test_overrides_found_by_fuzzing(text, phrase):
    with pytest.raises(PeterRecError) as info:
        parse_override(text)
    message = str(info.value)
    assert "\n" not in message and phrase in message, message


def test_peterrec_lines_split_only_at_line_breaks(scratch):
    """A form feed or U+2028 inside a line is part of an item id, not a new user (line numbers are ids)."""
    path = write(scratch, "lines.txt", "a\x0cb,c\nd\u2028e,,f\r\n".encode())
    assert read_peterrec_lines(path) == [(["a\x0cb", "c"], []), (["d\u2028e"], ["f"])]


def test_header_with_a_newline_in_a_quoted_name(scratch):
    path = write(scratch, "items.csv", b'item_id,"tit\nle"\ni1,a,b\n')
    with pytest.raises(PeterRecError, match=r"expected 2 fields \(item_id, tit\\nle\) but found 3") as info:
        read_item_text(path, text_columns=["tit\nle"])
    assert "\n" not in str(info.value)
