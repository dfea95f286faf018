"""Every named choice of the toolkit, defined once.

Each choice is a ``Literal`` type (used as the type of its config field, which the config loader checks)
and the tuple of its values derived from it (for messages, command-line options and loops). Modules import
these instead of listing the names again; :func:`check_choice` is the one check for Python callers.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

DataFormat = Literal["auto", "csv", "tsv", "recbole", "peterrec_lines"]
Split = Literal["train", "valid", "test"]
Objective = Literal["autoregressive", "masked"]
Softmax = Literal["auto", "full", "sampled"]
SamplerName = Literal["uniform", "log_uniform", "popularity"]
Schedule = Literal["constant", "cosine", "linear"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16", "auto"]

TaskType = Literal["profile", "coldrec", "nextitem"]
ColdRecLoss = Literal["softmax", "bce1"]
EvalProtocol = Literal["full", "sampled-99"]
ClassWeights = Literal["none", "balanced"]
History = Literal["recent", "full"]
ItemFeatureKind = Literal["tfidf", "hashing", "vectors", "minilm"]
MissingText = Literal["error", "empty"]

Strategy = Literal[
    "peterrec", "fine_all", "fine_cls", "fine_last1", "fine_last2", "peter_zero", "scratch", "adapter"
]
TrainNorms = Literal["ln2", "none", "all"]
# the frozen pretrained ID item table as trained (keep), or rescaled to the initialiser's std (init)
ItemScale = Literal["keep", "init"]
Pooling = Literal["auto", "cls_end", "first_last", "mean", "next_item"]
Insertion = Literal["serial", "serial_block", "parallel", "block_parallel"]
ParallelForm = Literal["residual", "original"]
AdapterModules = Literal["backbone", "item_encoder", "both", "auto"]  # auto: both with a content encoder
LayerSelection = Literal["all", "first_half", "last_half", "every_other"]


def values(choice: Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` choice, in declaration order."""
    return get_args(choice)


DATA_FORMATS = values(DataFormat)
TABLE_FORMATS = tuple(f for f in DATA_FORMATS if f != "peterrec_lines")  # read as one table
SPLITS = values(Split)
EVAL_SPLITS = SPLITS[1:]  # the held-out splits metrics are reported on
SAMPLER_NAMES = values(SamplerName)
STRATEGIES = values(Strategy)
CLASSIC_STRATEGIES = STRATEGIES[:7]  # the paper's comparison: what `compare --strategies all` runs
INSERTIONS = values(Insertion)
LAYER_SELECTIONS = values(LayerSelection)
ADAPTER_MODULES = values(AdapterModules)


def check_choice(field: str, value: Any, choice: Any) -> None:
    """Raise ``ValueError`` naming ``field`` unless ``value`` is one of the choice's values."""
    allowed = values(choice)
    if value not in allowed:
        raise ValueError(f"unknown {field} {value!r}; choose one of {', '.join(map(str, allowed))}")
