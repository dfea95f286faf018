"""Using finished runs: load a pretrained backbone, a finetuned run, or several task patches on one backbone.

A finetuned run stores only what its strategy trained (``patch.safetensors``) and the sha256 of the
backbone file it was trained on; loading rebuilds the model from the backbone run, re-applies the
strategy with the recorded seed and loads the patch strictly. A different backbone is refused. Runs
written by 0.1.0 load too: their weight names, config and manifest are translated on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peterrec.checkpoint import load_weights, verify_files
from peterrec.config import FinetuneConfig, PretrainConfig, load_config
from peterrec.data import Vocabulary
from peterrec.errors import CheckpointError
from peterrec.item_content import ItemContent, load_item_content
from peterrec.manifest import BackboneManifest, FinetuneManifest, Manifest, read_manifest
from peterrec.model.adapters import add_adapter_specs
from peterrec.model.adapters.base import to_current_names
from peterrec.model.item_encoder import CONTENT_ITEM_ENCODERS
from peterrec.model.next_item import NextItemModel, build_next_item_model
from peterrec.model.transfer import STRATEGY_PLANS, TransferModel, apply_strategy, trainable_state_dict
from peterrec.tasks import task_class
from peterrec.tasks.base import transfer_model

WEIGHTS_FILE = "backbone.safetensors"
PATCH_FILE = "patch.safetensors"
PER_USER_FILE = "test_per_user.json"  # a finetuned run's per-user test outputs (and its baselines')

# Weight names 0.1.0 wrote -> today's (the item table moved into the item encoder).
LEGACY_WEIGHT_NAMES = (("item_embedding.weight", "item_encoder.embedding.weight"),)


def translate_weight_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename tensors saved under 0.1.0 names; current names pass unchanged."""

    def rename(key: str) -> str:
        for old, new in LEGACY_WEIGHT_NAMES:
            if key == old or key.endswith("." + old):
                return key[: len(key) - len(old)] + new
        return key

    return {rename(k): v for k, v in tensors.items()}


@dataclass
class BaseRun:
    """A loaded pretraining run: backbone, its item softmax layer, vocabulary and provenance."""

    run_dir: Path
    model: NextItemModel
    vocab: Vocabulary
    config: PretrainConfig
    manifest: BackboneManifest
    content: ItemContent | None = None  # a content item encoder's featurizer and feature rows

    @property
    def backbone(self):
        return self.model.backbone

    @property
    def output(self):
        return self.model.output

    @property
    def sha256(self) -> str:
        return self.manifest.sha256[WEIGHTS_FILE]

    @property
    def task(self):
        """How this run is used: next-item prediction."""
        return task_class("nextitem")


def _manifest_of_kind(run_dir: Path, kind: str) -> Manifest:
    manifest = read_manifest(run_dir)
    if manifest.kind != kind:
        raise CheckpointError(
            f"{run_dir}: is a '{manifest.kind}' run, expected a '{kind}' run "
            f"({'a pretrain output' if kind == 'backbone' else 'a finetune output'})"
        )
    verify_files(run_dir, manifest.sha256)
    return manifest


def load_backbone(run_dir: str | Path, device: str | torch.device = "cpu") -> BaseRun:
    """Load a `peterrec pretrain` run (weights checked against the manifest's sha256)."""
    run_dir = Path(run_dir)
    manifest = _manifest_of_kind(run_dir, "backbone")
    config = load_config(PretrainConfig, run_dir / "config.yaml")
    vocab = Vocabulary.load(run_dir / "vocab.json")
    content = load_item_content(run_dir) if config.model.item_encoder in CONTENT_ITEM_ENCODERS else None
    features = content.features if content is not None else None
    model = build_next_item_model(config.model, len(vocab), config.data.max_len, features)
    try:
        model.load_state_dict(translate_weight_names(load_weights(run_dir / WEIGHTS_FILE)), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{run_dir / WEIGHTS_FILE}: does not fit its config ({exc})") from None
    return BaseRun(run_dir, model.to(device).eval(), vocab, config, manifest, content)


def strategy_kwargs(config: FinetuneConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`apply_strategy` that a finetune config sets."""
    a = config.adapter
    return {
        "adapter": a.kind,
        "layers": a.layers,
        "modules": a.modules,
        "train_norms": config.strategy.train_norms,
        "item_rank": config.strategy.item_rank,
        "item_scale": config.strategy.item_scale,
        **a.options,
    }


def build_transfer_model(
    config: FinetuneConfig, manifest: FinetuneManifest, base: BaseRun, extras: dict | None = None
) -> TransferModel:
    """The untrained model of a finetune run: backbone + head + the strategy's adapters."""
    s = config.strategy
    head = task_class(manifest.task_type).load_head(manifest.task, base, extras)
    model = transfer_model(base.backbone, head, s)
    apply_strategy(model, manifest.strategy, seed=manifest.seed, **strategy_kwargs(config))
    return model


def load_patch_into(model: TransferModel, patch: dict[str, torch.Tensor], path: Path) -> None:
    """Strict: the patch must hold exactly the tensors the strategy trains, with matching shapes."""
    expected = trainable_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(patch)), sorted(set(patch) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in patch.items():
        if expected[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
    model.load_state_dict(patch, strict=False)


def check_base(manifest: FinetuneManifest, base: BaseRun, run_dir: Path) -> None:
    expected = manifest.base.sha256
    if base.sha256 != expected:
        raise CheckpointError(
            f"{run_dir}: was finetuned on backbone sha256 {expected[:12]}..., but {base.run_dir} has "
            f"{base.sha256[:12]}...; pass the backbone run it was trained on"
        )


@dataclass
class FinetunedRun:
    """A ready-to-use finetuned model with what is needed to interpret its outputs."""

    run_dir: Path
    model: TransferModel
    config: FinetuneConfig
    manifest: FinetuneManifest
    base: BaseRun
    extras: dict[str, Any] = field(default_factory=dict)  # files the task saved (e.g. target_vocab)

    @property
    def task_type(self) -> str:
        return self.manifest.task_type

    @property
    def task(self):
        """The class of this run's task (what ``recommend`` and ``embed`` do with it)."""
        return task_class(self.task_type)

    @property
    def backbone(self):
        return self.model.backbone

    @property
    def vocab(self) -> Vocabulary:
        """The source-item vocabulary (the backbone's)."""
        return self.base.vocab

    @property
    def target_vocab(self) -> Vocabulary | None:
        return self.extras.get("target_vocab")


def resolve_base_dir(manifest: FinetuneManifest, run_dir: Path, backbone: str | Path | None) -> Path:
    if backbone is not None:
        return Path(backbone)
    recorded = Path(manifest.base.path)
    return recorded if recorded.is_absolute() or recorded.exists() else run_dir.parent / recorded.name


def load_run(
    run_dir: str | Path,
    backbone: str | Path | BaseRun | None = None,
    device: str | torch.device = "cpu",
) -> FinetunedRun:
    """Load a finetuned run: its backbone (recorded path, or ``backbone``), strategy and patch."""
    run_dir = Path(run_dir)
    manifest = _manifest_of_kind(run_dir, "finetune")
    if isinstance(backbone, BaseRun):
        base = backbone
    else:
        base = load_backbone(resolve_base_dir(manifest, run_dir, backbone), device)
    check_base(manifest, base, run_dir)
    config = load_config(FinetuneConfig, run_dir / "config.yaml")
    extras = task_class(manifest.task_type).load_extras(run_dir)
    model = build_transfer_model(config, manifest, base, extras)
    patch = translate_weight_names(load_weights(run_dir / PATCH_FILE))
    load_patch_into(model, patch, run_dir / PATCH_FILE)
    return FinetunedRun(run_dir, model.to(device).eval(), config, manifest, base, extras)


def load_any(run_dir: str | Path, backbone: str | Path | None = None) -> BaseRun | FinetunedRun:
    """A pretrain run or a finetune run, whichever ``run_dir`` holds."""
    if read_manifest(run_dir).kind == "backbone":
        return load_backbone(run_dir)
    return load_run(run_dir, backbone)


class PatchSwitcher:
    """Several task patches on one loaded backbone, switched without reloading it.

    ``use(name)`` puts back the backbone tensors the previous task had changed, loads the new task's
    trained tensors and returns a model with that task's head. Tasks must share one adapter layout
    (the insert adapters' kind, layers and options); runs whose backbone was re-initialised (peter_zero,
    scratch) cannot share.
    """

    def __init__(self, backbone_dir: str | Path, device: str | torch.device = "cpu"):
        self.base = load_backbone(backbone_dir, device)
        self.pristine = {k: v.clone() for k, v in self.base.backbone.state_dict().items()}
        self.layout: list[dict] | None = None
        self.runs: dict[str, dict] = {}
        self.active: str | None = None

    def add(self, run_dir: str | Path, name: str | None = None) -> str:
        """Register a finetuned run made from this backbone; returns its name."""
        run_dir = Path(run_dir)
        manifest = _manifest_of_kind(run_dir, "finetune")
        check_base(manifest, self.base, run_dir)
        if not STRATEGY_PLANS[manifest.strategy].pretrained:
            raise CheckpointError(f"{run_dir}: a {manifest.strategy} run has its own backbone; load it alone")
        config = load_config(FinetuneConfig, run_dir / "config.yaml")
        patch = translate_weight_names(load_weights(run_dir / PATCH_FILE))
        if STRATEGY_PLANS[manifest.strategy].adapted:
            self._ensure_layout(config)
        task = task_class(manifest.task_type)
        head = task.load_head(manifest.task, self.base, task.load_extras(run_dir))
        head.load_state_dict({k[len("head.") :]: v for k, v in patch.items() if k.startswith("head.")})
        name = name or run_dir.name
        self.runs[name] = {"config": config, "patch": patch, "head": head.to(self.pristine_device).eval()}
        return name

    @property
    def pristine_device(self) -> torch.device:
        return next(self.base.backbone.parameters()).device

    def _ensure_layout(self, config: FinetuneConfig) -> None:
        a = config.adapter
        layout = [{"kind": a.kind, "layers": a.layers, "modules": a.modules, "options": a.options}]
        if self.layout is None:
            self.base.backbone.load_state_dict(self.pristine)
            add_adapter_specs(self.base.backbone, layout)
            self.pristine = {k: v.clone() for k, v in self.base.backbone.state_dict().items()}
            self.layout = layout
        elif layout != self.layout:
            raise CheckpointError(
                f"adapter layout {layout} differs from the loaded {self.layout}; load it alone"
            )

    def use(self, name: str) -> TransferModel:
        """Switch the shared backbone to task ``name`` and return its model."""
        if name not in self.runs:
            raise CheckpointError(f"no task '{name}' loaded; known: {', '.join(self.runs)}")
        run = self.runs[name]
        backbone = self.base.backbone
        # Base tensors everywhere (identity patches included), then the task's own backbone tensors.
        own = {k[len("backbone.") :]: v for k, v in run["patch"].items() if k.startswith("backbone.")}
        # A run without adapters (fine_last*) names its tensors as the unpatched backbone does.
        backbone.load_state_dict({**self.pristine, **to_current_names(backbone, own)})
        model = transfer_model(backbone, run["head"], run["config"].strategy)
        for tensor_name, tensor in model.own_parameters().items():
            if tensor_name in run["patch"]:
                tensor.data.copy_(run["patch"][tensor_name])
        self.active = name
        return model.eval()


__all__ = [
    "PATCH_FILE",
    "WEIGHTS_FILE",
    "BaseRun",
    "FinetunedRun",
    "PatchSwitcher",
    "load_any",
    "load_backbone",
    "load_run",
]
