"""Using finished runs: load a pretrained backbone, a finetuned run, or several task patches on one backbone.

A finetuned run stores only what its strategy trained (``patch.safetensors``) and the sha256 of the
backbone file it was trained on; loading rebuilds the model from the backbone run, re-applies the
strategy with the recorded seed and loads the patch strictly. A different backbone is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from peterrec.checkpoint import load_weights, read_manifest, verify_files
from peterrec.config import FinetuneConfig, PretrainConfig, load_config
from peterrec.data import Vocabulary
from peterrec.errors import CheckpointError
from peterrec.finetune import TransferModel, apply_strategy, trainable_state_dict
from peterrec.heads import ClassifierHead, NextItemHead, TargetItemHead
from peterrec.patches import add_patches
from peterrec.pretrain import WEIGHTS_FILE, NextItemModel, build_model

PATCH_FILE = "patch.safetensors"
TARGET_VOCAB_FILE = "target_vocab.json"
REINITIALISING = ("peter_zero", "scratch")


@dataclass
class BaseRun:
    """A loaded pretraining run: backbone, its item softmax layer, vocabulary and provenance."""

    run_dir: Path
    model: NextItemModel
    vocab: Vocabulary
    config: PretrainConfig
    manifest: dict

    @property
    def backbone(self):
        return self.model.backbone

    @property
    def output(self):
        return self.model.output

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"][WEIGHTS_FILE]


def _manifest_of_kind(run_dir: Path, kind: str) -> dict:
    manifest = read_manifest(run_dir)
    if manifest.get("kind") != kind:
        raise CheckpointError(
            f"{run_dir}: is a '{manifest.get('kind')}' run, expected a '{kind}' run "
            f"({'a pretrain output' if kind == 'backbone' else 'a finetune output'})"
        )
    verify_files(run_dir, manifest)
    return manifest


def load_backbone(run_dir: str | Path, device: str | torch.device = "cpu") -> BaseRun:
    """Load a `peterrec pretrain` run (weights checked against the manifest's sha256)."""
    run_dir = Path(run_dir)
    manifest = _manifest_of_kind(run_dir, "backbone")
    config = load_config(PretrainConfig, run_dir / "config.yaml")
    vocab = Vocabulary.load(run_dir / "vocab.json")
    model = build_model(config, len(vocab))
    try:
        model.load_state_dict(load_weights(run_dir / WEIGHTS_FILE), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{run_dir / WEIGHTS_FILE}: does not fit its config ({exc})") from None
    return BaseRun(run_dir, model.to(device).eval(), vocab, config, manifest)


def make_head(task_info: dict, channels: int, base: BaseRun) -> torch.nn.Module:
    """A fresh head of the shape the task needs (weights come from the patch file)."""
    if task_info["type"] == "profile":
        return ClassifierHead(channels, len(task_info["classes"]))
    if task_info["type"] == "coldrec":
        return TargetItemHead(channels, task_info["target_items"])
    return NextItemHead(copy.deepcopy(base.output))


def build_transfer_model(config: FinetuneConfig, manifest: dict, base: BaseRun) -> TransferModel:
    """The untrained model of a finetune run: backbone + head + the strategy's patches."""
    s = config.strategy
    head = make_head(manifest["task"], base.backbone.channels, base)
    model = TransferModel(base.backbone, head, pooling=s.pooling, train_cls=s.train_cls)
    apply_strategy(
        model,
        manifest["strategy"],
        insertion=s.insertion,
        ratio=s.ratio,
        parallel_form=s.parallel_form,
        train_norms=s.train_norms,
        seed=manifest["seed"],
    )
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


def check_base(manifest: dict, base: BaseRun, run_dir: Path) -> None:
    expected = manifest["base"]["sha256"]
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
    manifest: dict
    base: BaseRun
    target_vocab: Vocabulary | None

    @property
    def task_type(self) -> str:
        return self.manifest["task"]["type"]


def resolve_base_dir(manifest: dict, run_dir: Path, backbone: str | Path | None) -> Path:
    if backbone is not None:
        return Path(backbone)
    recorded = Path(manifest["base"]["path"])
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
    model = build_transfer_model(config, manifest, base)
    load_patch_into(model, load_weights(run_dir / PATCH_FILE), run_dir / PATCH_FILE)
    target_vocab = None
    if (run_dir / TARGET_VOCAB_FILE).is_file():
        target_vocab = Vocabulary.load(run_dir / TARGET_VOCAB_FILE)
    return FinetunedRun(run_dir, model.to(device).eval(), config, manifest, base, target_vocab)


class PatchSwitcher:
    """Several task patches on one loaded backbone, switched without reloading it.

    ``use(name)`` puts back the backbone tensors the previous task had changed, loads the new task's
    trained tensors and returns a model with that task's head. Tasks must share one patch layout
    (insertion, ratio, form); runs whose backbone was re-initialised (peter_zero, scratch) cannot share.
    """

    def __init__(self, backbone_dir: str | Path, device: str | torch.device = "cpu"):
        self.base = load_backbone(backbone_dir, device)
        self.pristine = {k: v.clone() for k, v in self.base.backbone.state_dict().items()}
        self.layout: tuple | None = None
        self.runs: dict[str, dict] = {}
        self.active: str | None = None

    def add(self, run_dir: str | Path, name: str | None = None) -> str:
        """Register a finetuned run made from this backbone; returns its name."""
        run_dir = Path(run_dir)
        manifest = _manifest_of_kind(run_dir, "finetune")
        check_base(manifest, self.base, run_dir)
        if manifest["strategy"] in REINITIALISING:
            raise CheckpointError(
                f"{run_dir}: a {manifest['strategy']} run has its own backbone; load it alone"
            )
        config = load_config(FinetuneConfig, run_dir / "config.yaml")
        patch = load_weights(run_dir / PATCH_FILE)
        if any(".branch." in key for key in patch):
            self._ensure_layout(config)
        head = make_head(manifest["task"], self.base.backbone.channels, self.base)
        head.load_state_dict({k[len("head.") :]: v for k, v in patch.items() if k.startswith("head.")})
        name = name or run_dir.name
        self.runs[name] = {"config": config, "patch": patch, "head": head.to(self.pristine_device).eval()}
        return name

    @property
    def pristine_device(self) -> torch.device:
        return next(self.base.backbone.parameters()).device

    def _ensure_layout(self, config: FinetuneConfig) -> None:
        s = config.strategy
        layout = (s.insertion, s.ratio, s.parallel_form)
        if self.layout is None:
            self.base.backbone.load_state_dict(self.pristine)
            add_patches(self.base.backbone, s.insertion, s.ratio, s.parallel_form)
            self.pristine = {k: v.clone() for k, v in self.base.backbone.state_dict().items()}
            self.layout = layout
        elif layout != self.layout:
            raise CheckpointError(
                f"patch layout {layout} differs from the loaded {self.layout}; load it alone"
            )

    def use(self, name: str) -> TransferModel:
        """Switch the shared backbone to task ``name`` and return its model."""
        if name not in self.runs:
            raise CheckpointError(f"no task '{name}' loaded; known: {', '.join(self.runs)}")
        run = self.runs[name]
        backbone = self.base.backbone
        # Base tensors everywhere (identity patches included), then the task's own backbone tensors.
        own = {k[len("backbone.") :]: v for k, v in run["patch"].items() if k.startswith("backbone.")}
        backbone.load_state_dict({**self.pristine, **own})
        s = run["config"].strategy
        model = TransferModel(backbone, run["head"], pooling=s.pooling, train_cls=s.train_cls)
        if "cls_embedding" in run["patch"]:
            model.cls_embedding.data.copy_(run["patch"]["cls_embedding"])
        self.active = name
        return model.eval()
