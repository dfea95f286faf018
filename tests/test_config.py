"""Strict configs: unknown keys and wrong types fail with the key and the file named."""

import pytest

from peterrec.config import PretrainConfig, dump_config, load_config
from peterrec.errors import ConfigError


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_scientific_notation_is_a_float(tmp_path):
    config = load_config(PretrainConfig, _write(tmp_path, "train:\n  lr: 1e-3\n"))
    assert config.train.lr == pytest.approx(1e-3)
    assert isinstance(config.train.lr, float)


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, "train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'train\.learning_rate'"):
        load_config(PretrainConfig, path)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'optim'"):
        load_config(PretrainConfig, _write(tmp_path, "optim: {lr: 1}\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("train:\n  epochs: ten\n", "train.epochs must be int"),
        ("train:\n  epochs: 2.5\n", "train.epochs must be int"),
        ("train:\n  lr: fast\n", "train.lr must be float"),
        ("model:\n  causal: 'yes'\n", "model.causal must be bool"),
        ("model:\n  dilations: 4\n", "model.dilations must be a list"),
        ("model:\n  dilations: [1, x]\n", r"model.dilations\[1\] must be int"),
        ("objective:\n  sampler: zipf\n", "objective.sampler must be one of"),
        ("data: 3\n", "data must be a mapping"),
    ],
)
def test_wrong_types_are_rejected(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key):
        load_config(PretrainConfig, _write(tmp_path, text))


def test_objective_and_causality_must_match(tmp_path):
    with pytest.raises(ConfigError, match="needs model.causal: false"):
        load_config(PretrainConfig, _write(tmp_path, "objective:\n  objective: masked\n"))
    with pytest.raises(ConfigError, match="needs model.causal: true"):
        load_config(PretrainConfig, _write(tmp_path, "model:\n  causal: false\n"))


def test_target_window_is_for_the_autoregressive_objective_only(tmp_path):
    masked = "model:\n  causal: false\nobjective:\n  objective: masked\n"
    assert load_config(PretrainConfig, _write(tmp_path, masked)).objective.target_window == 1
    with pytest.raises(ConfigError, match="target_window applies to objective 'autoregressive' only"):
        load_config(PretrainConfig, _write(tmp_path, masked), ["objective.target_window=4"])
    causal = load_config(PretrainConfig, _write(tmp_path, ""), ["objective.target_window=4"])
    assert causal.objective.target_window == 4


def test_overrides_apply_and_are_checked(tmp_path):
    path = _write(tmp_path, "train:\n  lr: 0.1\n")
    config = load_config(PretrainConfig, path, ["train.lr=3e-4", "model.dilations=[1,2]"])
    assert config.train.lr == pytest.approx(3e-4)
    assert config.model.dilations == [1, 2]
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        load_config(PretrainConfig, path, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(PretrainConfig, path, ["train.lr"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PretrainConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"line \d+: not valid YAML"):
        load_config(PretrainConfig, _write(tmp_path, "train:\n  lr: [1\n"))


def test_resolved_config_round_trips(tmp_path):
    config = load_config(PretrainConfig, _write(tmp_path, "train:\n  lr: 1e-3\n"))
    again = load_config(PretrainConfig, _write(tmp_path, dump_config(config)))
    assert again == config


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted(Path(__file__).parent.parent.glob("configs/pretrain/*.yaml")):
        load_config(PretrainConfig, path)
