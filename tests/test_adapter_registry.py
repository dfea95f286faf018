"""The adapter registry: one entry point, kinds declare what they train, a new kind is one class."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from peterrec import add_adapters, register_adapter
from peterrec.config import FinetuneConfig, load_config
from peterrec.errors import ConfigError
from peterrec.model.adapters import ADAPTERS, adapters_of
from peterrec.model.adapters.base import Adapter, AdapterModule, base_state_dict, select_layers
from peterrec.model.backbone import NextItNet
from peterrec.model.heads import ClassifierHead
from peterrec.model.transfer import TransferModel, apply_strategy


class ShiftInput(AdapterModule):
    """Adds a trainable vector (zero at init) to every real input position."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.scale = scale
        self.delta = nn.Parameter(torch.zeros(channels))

    def forward(self, x, keep):
        shifted = x + self.scale * self.delta
        return (shifted if keep is None else shifted * keep), keep


@dataclass
class ShiftOptions:
    scale: float = 1.0

    def __post_init__(self):
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")


class ShiftAdapter(Adapter):
    """A toy kind of the third shape: it injects into the backbone's input."""

    kind = "toy_shift"
    Options = ShiftOptions
    shape = "input"

    def attach(self, backbone) -> list[str]:
        backbone.input_adapters.append(ShiftInput(backbone.channels, self.options.scale))
        index = len(backbone.input_adapters) - 1
        return [f"input_adapters.{index}.delta"]

    @classmethod
    def parameter_count(cls, channels, options, num_layers):
        return channels


@pytest.fixture
def toy_kind():
    register_adapter(ShiftAdapter)
    yield ShiftAdapter
    ADAPTERS.pop(ShiftAdapter.kind)


def tiny_model(num_items: int = 30) -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(NextItNet(num_items, channels=8, dilations=(1, 2)), ClassifierHead(8, 3))


def seqs() -> torch.Tensor:
    return torch.tensor([[0, 0, 5, 6, 7], [4, 9, 12, 3, 8]])


def test_builtin_kinds_are_registered():
    assert {"bottleneck", "unfreeze"} <= set(ADAPTERS)


def test_a_toy_kind_is_one_class_and_one_registration(toy_kind):
    model = tiny_model()
    before = model(seqs()).detach()
    report = apply_strategy(model, "peterrec", adapter="toy_shift", train_norms="none", scale=2.0)
    assert torch.equal(model(seqs()), before)  # identity at init
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"backbone.input_adapters.0.delta", "head.weight", "head.bias"}
    assert report.trainable == ShiftAdapter.parameter_count(8, ShiftOptions(), 0) + 8 * 3 + 3
    assert report.adapters == [{"kind": "toy_shift", "layers": [0, 1], "options": {"scale": 2.0}}]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(seqs()), torch.tensor([0, 2])).backward()
        optimizer.step()
    assert not torch.equal(model(seqs()), before)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    # the unpatched names see through the toy kind: a pretrained checkpoint still fits
    assert set(base_state_dict(model.backbone)) == set(NextItNet(30, 8, (1, 2)).state_dict())


def test_config_validates_options_through_the_kind(toy_kind):
    config = load_config(
        FinetuneConfig, None, ["task.labels=x.csv", "adapter.kind=toy_shift", "adapter.scale=3"]
    )
    assert config.adapter.kind == "toy_shift" and config.adapter.options == {"scale": 3.0}
    with pytest.raises(ConfigError, match="adapter kind 'toy_shift' has no option 'ratio'"):
        load_config(
            FinetuneConfig, None, ["task.labels=x.csv", "adapter.kind=toy_shift", "adapter.ratio=0.5"]
        )
    with pytest.raises(ConfigError, match="scale must be positive"):
        load_config(FinetuneConfig, None, ["task.labels=x.csv", "adapter.kind=toy_shift", "adapter.scale=-1"])
    with pytest.raises(ConfigError, match="unknown adapter kind 'nope'"):
        load_config(FinetuneConfig, None, ["task.labels=x.csv", "adapter.kind=nope"])


def test_bottleneck_options_in_config_and_the_0_1_0_names():
    config = load_config(FinetuneConfig, None, ["task.labels=x.csv", "adapter.insertion=parallel"])
    assert config.adapter.options == {"insertion": "parallel", "ratio": 0.25, "parallel_form": "residual"}
    legacy = load_config(FinetuneConfig, None, ["task.labels=x.csv", "strategy.insertion=block_parallel"])
    assert legacy.adapter.options["insertion"] == "block_parallel"
    with pytest.raises(ConfigError, match="adapter: unknown insertion 'sideways'"):
        load_config(FinetuneConfig, None, ["task.labels=x.csv", "adapter.insertion=sideways"])


def test_layers_select_residual_blocks():
    assert select_layers("all", 8) == list(range(8))
    assert select_layers("first_half", 8) == [0, 1, 2, 3]
    assert select_layers("last_half", 8) == [4, 5, 6, 7]
    assert select_layers("every_other", 8) == [0, 2, 4, 6]
    assert select_layers([-1, 0], 8) == [0, 7]
    for bad in ([8], [1, 1], [], "middle"):
        with pytest.raises(ValueError):
            select_layers(bad, 8)


def test_bottleneck_on_chosen_layers_declares_only_its_branches():
    model = tiny_model()
    adapter = add_adapters(model, "bottleneck", layers=[1], insertion="serial", ratio=0.5)
    assert adapter.trainable_names == [
        f"blocks.1.{conv}.branch.{layer}.{t}"
        for conv in ("conv1", "conv2")
        for layer in ("down", "up")
        for t in ("weight", "bias")
    ]
    assert adapters_of(model) == [adapter]
    with pytest.raises(ValueError, match="adapters go into the backbone"):
        add_adapters(model, "bottleneck", modules="item_encoder")


def test_unfreeze_declares_the_original_layer_behind_a_patch():
    model = tiny_model()
    add_adapters(model, "bottleneck", insertion="serial")
    unfreeze = add_adapters(model, "unfreeze", layers=[-1], parts=["conv2", "ln2"])
    assert unfreeze.trainable_names == [
        "blocks.1.conv2.conv.weight",
        "blocks.1.conv2.conv.bias",
        "blocks.1.ln2.weight",
        "blocks.1.ln2.bias",
    ]
