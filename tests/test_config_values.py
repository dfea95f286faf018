"""Numeric config values are range-checked when a config loads: NaN, infinity, a wrong sign, zero where it is
meaningless or a value out of range is a one-line ConfigError naming the key and the allowed range, from a
file and from ``--set`` alike, and the CLI stops before it creates a run directory."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner

from peterrec.commands.cli import main
from peterrec.config import FinetuneConfig, PretrainConfig, check_values, load_config
from peterrec.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
# A finetune config needs its task's files named to pass the cross-field checks.
FINETUNE_BASE = ("task.labels=labels.csv",)

NAN, INF, NEG_INF = ".nan", ".inf", "-.inf"
NON_FINITE = (NAN, INF, NEG_INF, "'nan'", "'inf'", "1e400")
POSITIVE_FLOAT = (*NON_FINITE, "0", "0.0", "-1e-3", "-5")
NON_NEGATIVE_FLOAT = (*NON_FINITE, "-1e-3", "-1")
FRACTION = (*NON_FINITE, "0", "-0.5", "1.5", "2")  # (0, 1]
AT_LEAST_1 = ("0", "-1", NAN, INF)
AT_LEAST_0 = ("-1", "-100", NAN)
SEED = ("-1", str(2**32), NAN)

# key -> the values it must refuse; every numeric key of both config classes is listed (checked below).
PRETRAIN_BAD = {
    "data.min_length": ("0", "-1", "2", NAN),
    "data.max_len": ("1", "0", "-1", NAN),
    "data.user_fraction": FRACTION,
    "model.channels": AT_LEAST_1,
    "model.dilations": ("[1, 0]", "[-1]", "[1, .nan]", "[]"),
    "model.kernel_size": AT_LEAST_1,
    "model.text.hashing_features": ("1", "0", "-3", "2.5"),
    "model.text.hidden": AT_LEAST_1,
    "objective.target_window": AT_LEAST_1,
    "objective.mask_ratio": FRACTION,
    "objective.max_masked": AT_LEAST_1,
    "objective.num_samples": AT_LEAST_1,
    "objective.sampler_power": NON_NEGATIVE_FLOAT,
    "objective.chunk_items": AT_LEAST_1,
    "train.epochs": AT_LEAST_1,
    "train.batch_size": AT_LEAST_1,
    "train.lr": POSITIVE_FLOAT,
    "train.weight_decay": NON_NEGATIVE_FLOAT,
    "train.warmup_steps": AT_LEAST_0,
    "train.clip_norm": POSITIVE_FLOAT,
    "train.patience": AT_LEAST_1,
    "train.seed": SEED,
    "train.eval_batch_size": AT_LEAST_1,
    "train.checkpoint_every": AT_LEAST_0,
}
FINETUNE_BAD = {
    **{key: bad for key, bad in PRETRAIN_BAD.items() if key.split(".")[0] in ("data", "train")},
    "data.min_length": ("0", "-1", NAN),
    "task.split": ("[0.8, 0.1, .nan]", "[0.9, 0.2, -0.1]", "[1.0, 0.0, 0.0]", "[0.5, 0.5]", "[.inf, 0, 0]"),
    "task.split_seed": SEED,
    "task.train_fraction": FRACTION,
    "task.head_dropout": ("-0.1", "1", "1.5", NAN),
    "task.click_dropout": ("-0.1", "1", "1.5", NAN),
    "task.folds": ("0", "-1", "101", NAN),
    "task.fold": ("-1", "100", NAN, "1"),  # 1: not below the default task.folds of 1
    "strategy.item_rank": AT_LEAST_0,
    "strategy.lr": ("{peterrec: .nan}", "{peterrec: 0}", "{fine_all: -1e-3}", "{peterrec: .inf}"),
}

CASES = [
    pytest.param(cls, key, value, id=f"{cls.__name__[:-6].lower()}-{key}={value}")
    for cls, table in ((PretrainConfig, PRETRAIN_BAD), (FinetuneConfig, FINETUNE_BAD))
    for key, values in table.items()
    for value in values
]


def _load(cls, path=None, overrides=()):
    base = FINETUNE_BASE if cls is FinetuneConfig else ()
    return load_config(cls, path, [*base, *overrides])


def _numeric_keys(cls, prefix="") -> set[str]:
    """Every field of ``cls`` (recursively) holding numbers: int, float, optional or in a container."""
    keys = set()
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys |= _numeric_keys(tp, f"{prefix}{f.name}.")
            continue
        leaves = {tp}
        while any(typing.get_origin(t) for t in leaves):
            leaves = {
                arg
                for t in leaves
                for arg in (typing.get_args(t) if typing.get_origin(t) else (t,))
                if arg is not type(None)
            }
        if leaves & {int, float} and f.name not in (
            "layers",
        ):  # adapter.layers: indices, checked by the kind
            keys.add(prefix + f.name)
    return keys


@pytest.mark.parametrize("cls, table", [(PretrainConfig, PRETRAIN_BAD), (FinetuneConfig, FINETUNE_BAD)])
def test_every_numeric_key_is_covered(cls, table):
    assert _numeric_keys(cls) == set(table)


@pytest.mark.parametrize("cls, key, value", CASES)
def test_bad_override_is_refused_naming_the_key(cls, key, value):
    with pytest.raises(ConfigError) as info:
        _load(cls, overrides=[f"{key}={value}"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config: "), message
    assert key in message, message


@pytest.mark.parametrize("cls, key, value", CASES)
def test_bad_file_value_is_refused_naming_the_key(cls, key, value, tmp_path):
    *sections, name = key.split(".")
    path = tmp_path / "c.yaml"
    nested = "".join(f"{'  ' * depth}{section}:\n" for depth, section in enumerate(sections))
    path.write_text(f"{nested}{'  ' * len(sections)}{name}: {value}\n")
    with pytest.raises(ConfigError) as info:
        _load(cls, path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert key in message, message


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=nan", "config: train.lr must be a finite number > 0, got nan"),
        ("train.lr=-.inf", "config: train.lr must be a finite number > 0, got -inf"),
        ("train.clip_norm=-1", "config: train.clip_norm must be a finite number > 0 or null, got -1.0"),
        ("train.weight_decay=-0.1", "config: train.weight_decay must be a finite number >= 0, got -0.1"),
        ("train.batch_size=0", "config: train.batch_size must be at least 1, got 0"),
        ("objective.mask_ratio=0", "config: objective.mask_ratio must be a finite number in (0, 1], got 0.0"),
        ("model.dilations=[1,2,0]", "config: model.dilations[2] must be at least 1, got 0"),
        ("train.seed=-1", "config: train.seed must be an integer from 0 to 4294967295, got -1"),
        (
            "data.max_len=1",
            "config: data.max_len must be at least 2 "
            "(a training window needs an item and at least one more), got 1",
        ),
    ],
)
def test_message_states_the_range_and_the_value(override, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config(PretrainConfig, None, [override])


@pytest.mark.parametrize(
    "cls, overrides",
    [
        (
            PretrainConfig,
            [
                "train.clip_norm=null",
                "train.weight_decay=0",
                "train.warmup_steps=0",
                "train.checkpoint_every=0",
                "train.seed=0",
                "objective.mask_ratio=1",
                "data.max_len=2",
                "data.min_length=3",
                "model.kernel_size=1",
                "model.dilations=[1]",
                "train.lr=1e-3",
            ],
        ),
        (PretrainConfig, [f"train.seed={2**32 - 1}", "train.lr='3e-4'"]),
        (
            FinetuneConfig,
            [
                "data.min_length=1",
                "task.train_fraction=1",
                "task.split=[0.6, 0.2, 0.2]",
                "strategy.lr={peterrec: 1e-3}",
                "task.split_seed=7",
            ],
        ),
    ],
)
def test_edge_values_that_are_allowed(cls, overrides):
    _load(cls, overrides=overrides)


def test_defaults_are_in_range():
    check_values(PretrainConfig())
    check_values(FinetuneConfig())


def test_check_values_catches_a_value_set_after_loading():
    config = _load(FinetuneConfig)
    bad = dataclasses.replace(config, task=dataclasses.replace(config.task, train_fraction=float("nan")))
    with pytest.raises(ConfigError, match=r"^--train-fraction: task\.train_fraction must be"):
        check_values(bad, "--train-fraction")


def test_every_shipped_config_loads():
    for path in sorted((REPO_ROOT / "configs").glob("*/*.yaml")):
        cls = PretrainConfig if path.parent.name == "pretrain" else FinetuneConfig
        load_config(cls, path)


@pytest.mark.parametrize(
    "args",
    [
        ["pretrain", "-c", "configs/pretrain/sample_autoregressive.yaml", "--set", "train.lr=nan"],
        ["pretrain", "-c", "configs/pretrain/sample_masked.yaml", "--set", "train.clip_norm=-1"],
        ["pretrain", "-c", "configs/pretrain/sample_autoregressive.yaml", "--set", "data.max_len=1"],
        [
            "finetune",
            "-c",
            "configs/finetune/sample_gender.yaml",
            "--backbone",
            "nowhere",
            "--set",
            "train.batch_size=0",
        ],
    ],
    ids=["pretrain-nan-lr", "pretrain-negative-clip", "pretrain-max_len-1", "finetune-batch-size-0"],
)
def test_cli_refuses_before_creating_a_run_folder(args, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert args[-1].split("=")[0] in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not out.with_name("run.partial").exists()
