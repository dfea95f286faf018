"""Strict YAML configs as dataclasses: an unknown key or a wrong type is an error naming the key and the file.

YAML 1.1 reads ``1e-3`` as a string; a float field accepts it (and any other number written as text).
Overrides use dotted paths: ``--set train.lr=3e-4``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from peterrec.errors import ConfigError

T = TypeVar("T")


def choice(default: Any, *options: Any) -> Any:
    """A field restricted to ``options`` (validated when the config is built)."""
    return field(default=default, metadata={"choices": options})


@dataclass
class DataConfig:
    """Where the click log is and how to read it."""

    path: str = "data/sample/source.csv"
    format: str = choice("auto", "auto", "csv", "tsv", "recbole", "peterrec_lines")
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str | None = "timestamp"
    separator: str | None = None
    min_length: int = 3
    max_len: int = 50


@dataclass
class ModelConfig:
    """NextItNet shape (DESIGN.md "Backbone")."""

    channels: int = 64
    dilations: list[int] = field(default_factory=lambda: [1, 4] * 4)
    kernel_size: int = 3
    causal: bool = True
    sparse_embedding: bool = False  # sparse rows + SparseAdam for the item tables (huge vocabularies)


@dataclass
class ObjectiveConfig:
    """Pretraining objective and output layer."""

    objective: str = choice("autoregressive", "autoregressive", "masked")
    mask_ratio: float = 0.3
    max_masked: int = 30
    softmax: str = choice("full", "full", "sampled")
    sampler: str = choice("log_uniform", "uniform", "log_uniform", "popularity")
    num_samples: int = 100
    logq_correction: bool = True


@dataclass
class TrainConfig:
    """Optimisation, early stopping and run bookkeeping."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = choice("constant", "constant", "cosine", "linear")
    warmup_steps: int = 0
    clip_norm: float | None = 5.0
    patience: int = 3
    monitor: str = "auto"  # auto: valid/ndcg@10 for ranking, valid/accuracy for profile
    seed: int = 0
    device: str = choice("auto", "auto", "cpu", "cuda")
    precision: str = choice("fp32", "fp32", "bf16")
    eval_batch_size: int = 256
    checkpoint_every: int = 0
    progress: bool = True


@dataclass
class PretrainConfig:
    """Everything `peterrec pretrain` needs."""

    name: str = "pretrain"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, source: str) -> None:
        """Cross-field checks that a single field's type cannot express."""
        obj, causal = self.objective.objective, self.model.causal
        if obj == "autoregressive" and not causal:
            raise ConfigError(
                f"{source}: objective.objective 'autoregressive' needs model.causal: true "
                "(a non-causal model sees the item it predicts); use objective 'masked' or set causal: true"
            )
        if obj == "masked" and causal:
            raise ConfigError(
                f"{source}: objective.objective 'masked' needs model.causal: false "
                "(a causal model cannot use the context after a masked item); set model.causal: false"
            )
        positive = {
            "data.max_len": self.data.max_len,
            "data.min_length": self.data.min_length,
            "model.channels": self.model.channels,
            "model.kernel_size": self.model.kernel_size,
            "train.epochs": self.train.epochs,
            "train.batch_size": self.train.batch_size,
            "train.eval_batch_size": self.train.eval_batch_size,
            "objective.num_samples": self.objective.num_samples,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{source}: {key} must be at least 1, got {value}")
        if self.data.min_length < 3:
            raise ConfigError(
                f"{source}: data.min_length must be at least 3 for leave-last-out "
                f"(one training, one validation and one test item), got {self.data.min_length}"
            )
        if not self.model.dilations or min(self.model.dilations) < 1:
            raise ConfigError(f"{source}: model.dilations must be a non-empty list of positive integers")
        if not self.model.causal and self.model.kernel_size % 2 == 0:
            raise ConfigError(f"{source}: a non-causal model needs an odd model.kernel_size")
        if self.model.sparse_embedding and self.objective.softmax != "sampled":
            raise ConfigError(
                f"{source}: model.sparse_embedding needs objective.softmax: sampled "
                "(a full softmax touches every row of the output table)"
            )
        if not 0.0 < self.objective.mask_ratio <= 1.0:
            raise ConfigError(f"{source}: objective.mask_ratio must be in (0, 1]")
        if self.train.lr <= 0:
            raise ConfigError(f"{source}: train.lr must be positive, got {self.train.lr}")
        known = {f"valid/{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)} | {"valid/mrr", "auto"}
        if self.train.monitor not in known:
            raise ConfigError(
                f"{source}: train.monitor '{self.train.monitor}' is not a pretraining metric; "
                "use e.g. valid/ndcg@10 or valid/hr@10"
            )


STRATEGY_NAMES = ("peterrec", "fine_all", "fine_cls", "fine_last1", "fine_last2", "peter_zero", "scratch")


@dataclass
class TaskConfig:
    """The downstream task: what is predicted from a user's source sequence."""

    type: str = choice("profile", "profile", "coldrec", "nextitem")
    labels: str | None = None  # profile: CSV/TSV label file or a RecBole .user file
    label_column: str = "gender"
    label_user_column: str = "user_id"
    target: str | None = None  # coldrec: target-domain interactions (same columns as data)
    loss: str = choice("softmax", "softmax", "bce1")
    eval: str = choice("full", "full", "sampled-99")
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 0
    train_fraction: float = 1.0


@dataclass
class StrategyConfig:
    """How the pretrained backbone is transferred (DESIGN.md "Strategies")."""

    name: str = choice("peterrec", *STRATEGY_NAMES)
    insertion: str = choice("serial", "serial", "parallel", "block_parallel")
    parallel_form: str = choice("residual", "residual", "original")
    ratio: float = 0.25
    train_norms: str = choice("ln2", "ln2", "none", "all")
    pooling: str = choice("auto", "auto", "cls_end", "first_last", "mean")
    train_cls: bool = False
    lr: dict[str, float] = field(default_factory=dict)  # per-strategy learning rate; else train.lr


@dataclass
class FinetuneConfig:
    """Everything `peterrec finetune` needs besides the backbone directory."""

    name: str = "finetune"
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(min_length=1))
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, source: str) -> None:
        task = self.task
        if task.type == "profile" and not task.labels:
            raise ConfigError(f"{source}: task.type 'profile' needs task.labels (a user_id,label file)")
        if task.type == "coldrec" and not task.target and self.data.format != "peterrec_lines":
            raise ConfigError(
                f"{source}: task.type 'coldrec' needs task.target (target-domain clicks), "
                "or data.format: peterrec_lines with 'src...,,tgt...' lines"
            )
        if len(task.split) != 3 or abs(sum(task.split) - 1.0) > 1e-6 or min(task.split) <= 0:
            raise ConfigError(f"{source}: task.split must be three positive fractions summing to 1")
        if not 0.0 < task.train_fraction <= 1.0:
            raise ConfigError(f"{source}: task.train_fraction must be in (0, 1], got {task.train_fraction}")
        if not 0.0 < self.strategy.ratio <= 4.0:
            raise ConfigError(f"{source}: strategy.ratio must be in (0, 4], got {self.strategy.ratio}")
        unknown = sorted(set(self.strategy.lr) - set(STRATEGY_NAMES))
        if unknown:
            raise ConfigError(f"{source}: strategy.lr names unknown strategy '{unknown[0]}'")
        if task.type == "nextitem" and self.data.min_length < 3:
            raise ConfigError(f"{source}: task nextitem needs data.min_length >= 3 (leave-last-out)")
        if self.data.max_len < 2:
            raise ConfigError(f"{source}: data.max_len must be at least 2")

    def resolved_monitor(self) -> str:
        """``auto`` picks accuracy or NDCG@10; under ``eval: sampled-99`` ranking names carry that label."""
        monitor = self.train.monitor
        if monitor == "auto":
            monitor = "valid/accuracy" if self.task.type == "profile" else "valid/ndcg@10"
        if self.task.eval == "sampled-99" and self.task.type == "coldrec" and "sampled99_" not in monitor:
            monitor = monitor.replace("valid/", "valid/sampled99_", 1)
        return monitor

    def lr_for(self, strategy: str) -> float:
        return self.strategy.lr.get(strategy, self.train.lr)


# ---------------------------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check (and where safe, convert) one value against a field's type hint."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return {
            _coerce(k, key_type, key, source): _coerce(v, value_type, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping of settings, got {value!r}")
        return _build(tp, value, source, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this parser does not know is a programming error
        raise TypeError(f"unsupported config type {tp!r} for {key}")
    raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")


def _build(cls: type[T], values: dict, source: str, prefix: str = "") -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' "
            f"(known keys under '{prefix or 'top level'}': {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        key = prefix + name
        coerced = _coerce(value, hints[name], key, source)
        options = fields[name].metadata.get("choices")
        if options and coerced not in options:
            raise ConfigError(f"{source}: {key} must be one of {', '.join(options)}, got {coerced!r}")
        kwargs[name] = coerced
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (['train', 'lr'], '3e-4' parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc.problem})") from None
    return path, value


def _apply_override(values: dict, path: list[str], value: Any) -> None:
    node = values
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: '{part}' is not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing file with -c")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, ...)")
    return values


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Build config ``cls`` from a YAML file (or defaults) plus ``--set`` overrides, strictly."""
    values = read_yaml(path) if path is not None else {}
    for text in overrides:
        _apply_override(values, *parse_override(text))
    source = str(path) if path is not None else "config"
    config = _build(cls, values, source)
    if hasattr(config, "validate"):
        config.validate(source)
    return config


def config_to_dict(config: Any) -> dict:
    """Plain nested dict, suitable for YAML and hashing."""
    return dataclasses.asdict(config)


def dump_config(config: Any) -> str:
    """The fully resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
