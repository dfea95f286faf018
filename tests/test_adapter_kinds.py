"""Every adapter kind: identity at init (prompt: documented exception), exact parameter counts, frozen
weights untouched by training, LoRA merge, and a saved patch of each kind loads back."""

from __future__ import annotations

import pytest
import torch

from peterrec.model.adapters import ADAPTERS, adapters_of, merge_item_lora, merge_lora
from peterrec.model.adapters.item_lora import PatchedItemTable
from peterrec.model.adapters.lora import LoRAConv
from peterrec.model.backbone import NextItNet, count_parameters
from peterrec.model.heads import ClassifierHead
from peterrec.model.transfer import TransferModel, apply_strategy, trainable_state_dict
from peterrec.runs import load_patch_into
from peterrec.tokens import CLS, PAD

C, BLOCKS = 16, 4
KINDS = [
    ("bottleneck", {"insertion": "serial"}),
    ("bottleneck", {"insertion": "serial_block"}),
    ("bottleneck", {"insertion": "parallel"}),
    ("bottleneck", {"insertion": "block_parallel"}),
    ("lora", {"rank": 4, "alpha": 8.0}),
    ("bitfit", {}),
    ("layernorm", {}),
    ("item_lora", {"rank": 3}),
]
ALL_KINDS = [*KINDS, ("prompt", {"length": 3})]


def ids(case) -> str:
    kind, options = case
    return "-".join([kind, *map(str, options.values())])


def pretrained(seed: int = 0, causal: bool = True) -> NextItNet:
    torch.manual_seed(seed)
    backbone = NextItNet(40, C, (1, 2, 1, 2), causal=causal)
    with torch.no_grad():  # pretrained-looking LayerNorms and biases, so biases and norms matter
        for p in backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return backbone


def model_for(kind: str, options: dict, layers="all", seed: int = 0, causal: bool = True) -> TransferModel:
    torch.manual_seed(seed)
    model = TransferModel(pretrained(causal=causal), ClassifierHead(C, 3))
    apply_strategy(model, "adapter", adapter=kind, layers=layers, seed=seed, **options)
    return model


SEQS = torch.tensor([[0, 0, 0, 5, 6, 7, 8], [4, 9, 12, 3, 8, 10, 11], [0, 0, 0, 0, 0, 7, 7]])


def hidden(backbone: NextItNet) -> torch.Tensor:
    return backbone(SEQS)


def test_every_builtin_kind_is_tested():
    assert {k for k, _ in ALL_KINDS} | {"unfreeze"} == set(ADAPTERS)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", KINDS, ids=ids)
def test_adapter_is_the_pretrained_model_at_init(case, causal):
    kind, options = case
    reference = hidden(pretrained(causal=causal)).detach()
    model = model_for(kind, options, causal=causal)
    assert torch.equal(hidden(model.backbone), reference)


def test_prompt_trains_only_its_prompts_and_keeps_the_shape():
    model = model_for("prompt", {"length": 3})
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"backbone.input_adapters.0.prompts", "head.weight", "head.bias"}
    assert hidden(model.backbone).shape == (3, SEQS.shape[1], C)
    # the prompts are new context, so (the documented exception) the output changes at init
    assert not torch.equal(hidden(model.backbone), hidden(pretrained()))


@pytest.mark.parametrize("layers", ["all", "last_half", [0]])
@pytest.mark.parametrize("case", ALL_KINDS, ids=ids)
def test_parameter_count_matches_the_formula(case, layers):
    kind, options = case
    model = model_for(kind, options, layers=layers)
    (adapter,) = adapters_of(model)
    declared = sum(model.backbone.get_parameter(n).numel() for n in adapter.trainable_names)
    num_layers = len(adapter.layers)
    if kind == "item_lora":  # r per table row (40 items + 4 special tokens) and r per channel
        assert declared == options["rank"] * (40 + 4 + C)
    else:
        assert declared == ADAPTERS[kind].parameter_count(C, adapter.options, num_layers)
    head = count_parameters(model.head)
    assert count_parameters(model, trainable_only=True) == declared + head


@pytest.mark.parametrize("case", ALL_KINDS, ids=ids)
def test_frozen_weights_stay_bit_identical(case):
    kind, options = case
    model = model_for(kind, options)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(SEQS), torch.tensor([0, 1, 2])).backward()
        optimizer.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert all(not torch.equal(model.get_parameter(n), v) for n, v in trained.items() if "backbone" in n)


@pytest.mark.parametrize("case", ALL_KINDS, ids=ids)
def test_a_saved_patch_of_each_kind_loads_back(case, tmp_path):
    kind, options = case
    model = model_for(kind, options)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    patch = {k: v.clone() for k, v in trainable_state_dict(model).items()}
    fresh = model_for(kind, options, seed=1)
    load_patch_into(fresh, patch, tmp_path / "patch.safetensors")
    assert torch.equal(fresh(SEQS), model(SEQS))


def test_lora_merges_into_the_conv_weights():
    model = model_for("lora", {"rank": 4, "alpha": 8.0})
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if "lora_b" in name:
                p.normal_(0, 0.1)
    unmerged = hidden(model.backbone).detach()
    assert not torch.allclose(unmerged, hidden(pretrained()), atol=1e-3)
    assert merge_lora(model.backbone) == 2 * BLOCKS
    assert not any(isinstance(m, LoRAConv) for m in model.backbone.modules())
    assert torch.allclose(hidden(model.backbone), unmerged, atol=1e-5)
    assert count_parameters(model.backbone) == count_parameters(pretrained())


def test_item_lora_moves_only_the_items_it_sees_and_merges_into_the_table():
    model = model_for("item_lora", {"rank": 3})
    table = model.backbone.item_encoder.embedding
    assert isinstance(table, PatchedItemTable) and not table.embedding.weight.requires_grad
    torch.nn.functional.cross_entropy(model(SEQS), torch.tensor([0, 1, 2])).backward()
    grad = table.offset.item_factors.grad
    seen = torch.zeros(len(grad), dtype=torch.bool)
    seen[SEQS.unique()] = True
    seen[PAD], seen[CLS] = False, True  # [PAD] positions are masked; pooling appends a [CLS]
    assert grad[seen].abs().sum(dim=1).gt(0).all() and not grad[~seen].any()
    with torch.no_grad():
        table.offset.item_factors.normal_()
    unmerged = hidden(model.backbone).detach()
    assert not torch.allclose(unmerged, hidden(pretrained()), atol=1e-3)
    assert merge_item_lora(model.backbone) and not merge_item_lora(model.backbone)
    assert isinstance(model.backbone.item_encoder.embedding, torch.nn.Embedding)
    assert torch.allclose(hidden(model.backbone), unmerged, atol=1e-6)
    assert adapters_of(model) == []


def test_item_lora_refuses_what_it_cannot_patch():
    model = model_for("item_lora", {"rank": 2})
    with pytest.raises(ValueError, match="already patched"):
        apply_strategy(model, "adapter", adapter="item_lora", rank=2)
    torch.manual_seed(0)
    sparse = TransferModel(NextItNet(40, C, (1, 2), sparse_embedding=True), ClassifierHead(C, 3))
    with pytest.raises(ValueError, match="dense item table"):
        apply_strategy(sparse, "adapter", adapter="item_lora", rank=2)
    with pytest.raises(ValueError, match="positive integer"):
        model_for("item_lora", {"rank": 0})


def test_item_rank_adds_the_table_patch_to_the_adapted_strategies_only():
    cases = [("peterrec", True), ("peter_zero", True), ("fine_cls", False), ("fine_all", False)]
    for strategy, patched in cases:
        torch.manual_seed(0)
        model = TransferModel(pretrained(), ClassifierHead(C, 3))
        reference = hidden(model.backbone).detach()
        report = apply_strategy(model, strategy, item_rank=2)
        kinds = [a["kind"] for a in report.adapters]
        assert ("item_lora" in kinds) == patched, strategy
        if strategy == "peterrec":  # still the pretrained model at init
            assert torch.equal(hidden(model.backbone), reference)


def test_lora_keeps_no_taps_for_the_frozen_conv():
    """The frozen conv's weight gets no gradient; only the low-rank factors (and the head) do."""
    model = model_for("lora", {"rank": 2})
    torch.nn.functional.cross_entropy(model(SEQS), torch.tensor([0, 1, 2])).backward()
    conv = model.backbone.blocks[0].conv1.conv
    assert conv.weight.grad is None and model.backbone.blocks[0].conv1.branch.lora_a.grad is not None


def test_options_are_checked_by_the_kind():
    for kind, bad in [("lora", {"rank": 0}), ("lora", {"alpha": -1.0}), ("prompt", {"length": 0})]:
        with pytest.raises(ValueError):
            model_for(kind, bad)
    with pytest.raises(ValueError, match="has no option"):
        model_for("bitfit", {"rank": 2})
