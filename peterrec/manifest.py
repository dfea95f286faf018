"""The manifest of a run directory: what produced it, the sha256 of its files, its figures.

Two kinds, typed: :class:`BackboneManifest` (``peterrec pretrain``) and :class:`FinetuneManifest`
(``peterrec finetune``). ``schema_version`` says which layout a file has; :func:`read_manifest` translates
older layouts (0.1.0 wrote version 1, without the field) so every run written since still loads.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peterrec.checkpoint import PARTIAL_SUFFIX, atomic_write_json
from peterrec.errors import CheckpointError

SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"


@dataclass(kw_only=True)
class RunManifest:
    """What every run records."""

    kind: str
    name: str
    sha256: dict[str, str]  # file name in the run directory -> its sha256
    parameters: dict[str, int]
    seed: int
    best_epoch: int
    epochs_run: int
    train_seconds: float
    wall_seconds: float
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    device: str
    versions: dict[str, str]
    precision: str | None = None  # what training ran in (train.precision resolved); None before 0.2.1
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / MANIFEST_FILE, self.to_dict())


@dataclass(kw_only=True)
class BackboneManifest(RunManifest):
    """A pretraining run: the backbone, its vocabulary and config, and its next-item figures."""

    kind: str = "backbone"
    config_sha256: str
    num_items: int
    special_tokens: int
    data: dict[str, Any]  # path, fingerprint and statistics of the click log
    tokens_per_s: float | None
    softmax: str | None = None  # objective.softmax as resolved (full or sampled); None before 0.2.1


@dataclass(kw_only=True)
class BaseRef:
    """The backbone run a finetune run was made from."""

    path: str
    sha256: str
    name: str | None = None


@dataclass(kw_only=True)
class FinetuneManifest(RunManifest):
    """A finetune run: task, strategy, the adapters added, and the backbone it needs."""

    kind: str = "finetune"
    strategy: str
    task: dict[str, Any]  # the task's describe(): type first
    base: BaseRef
    adapters: list[dict] = field(default_factory=list)  # kind, layers, options of each adapter added
    lr: float
    train_fraction: float
    seconds_per_epoch: float | None
    peak_memory_bytes: int | None

    @property
    def task_type(self) -> str:
        return self.task["type"]


Manifest = BackboneManifest | FinetuneManifest
_KINDS: dict[str, type[RunManifest]] = {"backbone": BackboneManifest, "finetune": FinetuneManifest}


def _upgrade(values: dict[str, Any]) -> dict[str, Any]:
    """Translate an older manifest layout to the current one."""
    values = dict(values)
    version = values.pop("schema_version", 1)
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"manifest schema_version {version} is newer than this peterrec reads ({SCHEMA_VERSION}); upgrade"
        )
    if values.get("kind") == "finetune":
        # Version 1 (0.1.0) had no adapter list: runs made then are re-created from their config alone.
        values.setdefault("adapters", [])
    values["schema_version"] = SCHEMA_VERSION
    return values


def manifest_from_dict(values: dict[str, Any], source: str = "manifest") -> Manifest:
    """A typed manifest from its JSON form (any schema version this code knows)."""
    if not isinstance(values, dict) or values.get("kind") not in _KINDS:
        raise CheckpointError(f"{source}: not a peterrec manifest (kind must be backbone or finetune)")
    values = _upgrade(values)
    cls = _KINDS[values["kind"]]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = (
        sorted(set(values) - known),
        sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ),
    )
    if unknown or missing:
        raise CheckpointError(
            f"{source}: unexpected keys {unknown} or missing keys {missing}; the file was changed"
        )
    if cls is FinetuneManifest:
        values["base"] = BaseRef(**values["base"])
    return cls(**values)


def read_manifest(run_dir: str | Path) -> Manifest:
    """The manifest of a complete run directory."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        hint = " (the run did not finish; use --resume)" if str(run_dir).endswith(PARTIAL_SUFFIX) else ""
        raise CheckpointError(f"{path}: not found; {run_dir} is not a complete peterrec run{hint}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt manifest ({exc})") from None
    return manifest_from_dict(values, str(path))


__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "BackboneManifest",
    "BaseRef",
    "FinetuneManifest",
    "Manifest",
    "manifest_from_dict",
    "read_manifest",
]
