"""Malformed inputs a user can give `peterrec pretrain`: one `error:` line, no traceback, no run directory."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from conftest import set_args

from peterrec.errors import ConfigError, DataError

GOOD_ROWS = "".join(f"u{u},i{(u * 7 + t) % 23},{100 + t}\n" for u in range(40) for t in range(8))
HEADER = "user_id,item_id,timestamp\n"


@dataclass
class Case:
    """One malformed input: the file to write (``None``: none) and what the error must say."""

    name: str
    filename: str
    content: bytes | None
    phrases: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    names_data_file: bool = True  # a data error names the data file; a config error names its source
    marks: tuple = field(default_factory=tuple)


CASES = [
    Case("missing file", "nowhere.csv", None, ("file not found",)),
    Case("empty file", "empty.csv", b"", ("file is empty",)),
    Case("blank lines only", "blank.csv", b"\n  \n\n", ("file is empty",)),
    Case("header only", "header.csv", HEADER.encode(), ("has a header but no rows",)),
    Case(
        "missing user column",
        "nouser.csv",
        b"uid,item_id,timestamp\nu1,i1,1\n",
        ("no column 'user_id'", "data.user_column"),
    ),
    Case(
        "missing item column",
        "noitem.csv",
        b"user_id,product,timestamp\nu1,i1,1\n",
        ("no column 'item_id'", "data.item_column"),
    ),
    Case(
        "missing timestamp column",
        "notime.csv",
        b"user_id,item_id\nu1,i1\n",
        ("no column 'timestamp'", "data.time_column: null"),
    ),
    Case(
        "wrong field count",
        "fields.csv",
        (HEADER + "u1,i1,1\nu1,i2,2,extra\n").encode(),
        ("line 3", "expected 3 fields", "found 4"),
    ),
    Case("empty item id", "noid.csv", (HEADER + "u1,i1,1\nu1,,2\n").encode(), ("line 3", "empty item id")),
    Case(
        "non-numeric timestamp",
        "time.csv",
        (HEADER + "u1,i1,1\nu1,i2,yesterday\n").encode(),
        ("line 3", "'yesterday' is not a number"),
    ),
    Case(
        "infinite timestamp",
        "inf.csv",
        (HEADER + "u1,i1,1\nu1,i2,inf\n").encode(),
        ("line 3", "is not a number"),
    ),
    Case(
        "non-UTF-8 bytes",
        "latin1.csv",
        HEADER.encode() + "u1,caf\u00e9,1\n".encode("latin-1"),
        ("line 2", "byte 0xe9", "not valid UTF-8"),
    ),
    Case(
        "broken quoting",
        "quotes.csv",
        (HEADER + 'u1,"i1"x,1\n').encode(),
        ("line 2", "cannot parse", "quot"),
    ),
    Case(
        "RecBole header without types",
        "log.inter",
        b"user_id\titem_id\ttimestamp\nu1\ti1\t1\n",
        ("line 1", "has no ':type'", "user_id:token"),
    ),
    Case(
        "RecBole unknown type",
        "typed.inter",
        b"user_id:token\titem_id:word\ttimestamp:float\nu1\ti1\t1\n",
        ("line 1", "unknown type 'word'"),
    ),
    Case(
        "unknown extension",
        "log.dat",
        (HEADER + "u1,i1,1\n").encode(),
        ("cannot tell the format", "data.format"),
    ),
    Case(
        "all sequences shorter than min_length",
        "short.csv",
        (HEADER + "".join(f"u{u},i{t},{t}\n" for u in range(5) for t in range(2))).encode(),
        ("data.min_length=3", "the longest has 2"),
    ),
    Case(
        "no sequence long enough to train on",
        "three.csv",
        (HEADER + "".join(f"u{u},i{t},{t}\n" for u in range(5) for t in range(3))).encode(),
        ("no user has a training sequence", "at least 4 clicks"),
    ),
    Case(
        "unknown config key",
        "config.yaml",
        b"train:\n  epoch: 3\n",
        ("unknown key 'train.epoch'", "epochs"),
        names_data_file=True,  # the file named is the config
    ),
    Case(
        "invalid YAML",
        "config.yaml",
        b"train:\n  epochs: [3\n",
        ("not valid YAML",),
    ),
    Case(
        "config top level not a mapping",
        "config.yaml",
        b"- 1\n- 2\n",
        ("must be a mapping",),
    ),
    Case(
        "wrong config type",
        "",
        None,
        ("train.epochs must be int", "'ten'"),
        overrides=("train.epochs=ten",),
        names_data_file=False,
    ),
    Case(
        "value outside choices",
        "",
        None,
        ("objective.softmax must be one of", "'big'"),
        overrides=("objective.softmax=big",),
        names_data_file=False,
    ),
    Case(
        "objective and causality mismatch",
        "",
        None,
        ("needs model.causal: true",),
        overrides=("model.causal=false",),
        names_data_file=False,
    ),
    Case(
        "non-positive setting",
        "",
        None,
        ("train.batch_size must be at least 1",),
        overrides=("train.batch_size=0",),
        names_data_file=False,
    ),
    Case(
        "malformed --set without '='",
        "",
        None,
        ("--set 'train.lr'", "expected KEY=VALUE"),
        overrides=("train.lr",),
        names_data_file=False,
    ),
]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def prepare(case: Case, tmp_path, sample_config, tiny_overrides) -> tuple[list[str], str]:
    """The pretrain arguments for ``case`` (its file written to ``tmp_path``) and the name to find."""
    config, overrides = sample_config, [*tiny_overrides, *case.overrides]
    name = case.filename
    if case.filename:
        path = tmp_path / case.filename
        if case.content is not None:
            path.write_bytes(case.content)
        if case.filename.endswith(".yaml"):
            config = path
        else:
            overrides.append(f"data.path={path}")
    else:
        name = sample_config.name
    args = ["pretrain", "-c", config, *set_args(overrides), "--out", tmp_path / "run"]
    return args, name


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_malformed_input_gives_one_line_and_no_run_dir(case, tmp_path, cli, sample_config, tiny_overrides):
    args, name = prepare(case, tmp_path, sample_config, tiny_overrides)
    result = cli(*args)

    assert result.exit_code != 0, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.output
    message = lines[0]
    if case.names_data_file:
        assert name in message, message
    for phrase in case.phrases:
        assert phrase in message, message
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "run.partial").exists()


def test_case_list_covers_the_acceptance_kinds():
    assert len(CASES) >= 12
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_real_process_exit_code_and_stderr(debug, tmp_path, run_peterrec, sample_config, tiny_overrides):
    data = tmp_path / "fields.csv"
    data.write_text(HEADER + "u1,i1,1\nu1,i2,2,extra\n")
    flags = ["--debug"] if debug else ["-q"]
    overrides = [*tiny_overrides, f"data.path={data}"]
    proc = run_peterrec(
        *flags, "pretrain", "-c", sample_config, *set_args(overrides), "--out", tmp_path / "run"
    )

    assert proc.returncode != 0
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "run.partial").exists()
    if debug:
        assert "Traceback" in proc.stderr
        assert "DataError" in proc.stderr
        assert "fields.csv line 3" in proc.stderr
    else:
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: ")
        assert "fields.csv line 3: expected 3 fields" in lines[0]
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""


@pytest.mark.parametrize(
    "error, overrides",
    [(DataError, ["data.path=does/not/exist.csv"]), (ConfigError, ["train.epochs=ten"])],
    ids=["data", "config"],
)
def test_debug_raises_the_project_error(error, overrides, tmp_path, cli, sample_config, tiny_overrides):
    args = ["--debug", "pretrain", "-c", sample_config, *set_args([*tiny_overrides, *overrides])]
    result = cli(*args, "--out", tmp_path / "run")
    assert isinstance(result.exception, error)
    assert not error_lines(result.output)
    assert not (tmp_path / "run.partial").exists()


def test_missing_config_file(tmp_path, cli):
    result = cli("pretrain", "-c", tmp_path / "nope.yaml", "--out", tmp_path / "run")
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "nope.yaml: config file not found" in line
    assert not (tmp_path / "run.partial").exists()


def test_bad_monitor_leaves_no_run_dir(tmp_path, cli, sample_config, tiny_overrides, one_thread):
    data = tmp_path / "small.csv"
    data.write_text(HEADER + GOOD_ROWS)
    overrides = [*tiny_overrides, f"data.path={data}", "train.epochs=1", "train.monitor=valid/bogus"]
    result = cli("pretrain", "-c", sample_config, *set_args(overrides), "--out", tmp_path / "run")
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "train.monitor 'valid/bogus' is not a" in line
    assert "valid/ndcg@10" in line
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "run.partial").exists(), (
        "a config error found after training started left a .partial directory behind"
    )


def test_inspect_missing_dir(tmp_path, cli):
    result = cli("inspect", tmp_path / "absent")
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "absent" in line
    assert "is not a complete peterrec run" in line
    assert "Traceback" not in result.output


def test_inspect_dir_without_manifest(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "vocab.json").write_text("{}")
    result = cli("inspect", run)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "manifest.json: not found" in line


def test_inspect_partial_dir_hints_resume(tmp_path, cli):
    run = tmp_path / "run.partial"
    run.mkdir()
    result = cli("inspect", run)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "--resume" in line


def test_inspect_corrupt_manifest(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{not json")
    result = cli("inspect", run)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "corrupt manifest" in line
