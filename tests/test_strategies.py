"""Transfer strategies, user representations and task heads on a tiny NextItNet."""

import copy

import pytest
import torch
import torch.nn.functional as F

from peterrec import CLS, PAD
from peterrec.model.adapters.bottleneck import base_state_dict, patch_parameter_count
from peterrec.model.backbone import NextItNet, count_parameters
from peterrec.model.heads import ClassifierHead, NextItemHead, TargetItemHead
from peterrec.model.item_encoder import ItemOutput
from peterrec.model.transfer import (
    STRATEGIES,
    TransferModel,
    apply_strategy,
    frozen_state_dict,
    trainable_state_dict,
)

NUM_ITEMS = 40
CHANNELS = 16
DILATIONS = (1, 2)
# (strategy, insertion): every strategy, and the patched ones with every insertion.
CASES = [
    (s, i)
    for s in STRATEGIES
    for i in (("serial", "parallel", "block_parallel") if s in ("peterrec", "peter_zero") else ("serial",))
]


def _backbone(causal: bool = True, seed: int = 0) -> NextItNet:
    torch.manual_seed(seed)
    return NextItNet(NUM_ITEMS, channels=CHANNELS, dilations=DILATIONS, causal=causal)


def _model(causal: bool = True, pooling: str = "auto", train_cls: bool = False) -> TransferModel:
    backbone = _backbone(causal)
    return TransferModel(backbone, ClassifierHead(CHANNELS, 2), pooling=pooling, train_cls=train_cls)


def _seqs(batch: int = 8, length: int = 10, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    seqs = torch.randint(4, NUM_ITEMS + 4, (batch, length), generator=gen)
    for row in range(batch):
        seqs[row, : row % length] = PAD  # left padding of every amount
    return seqs


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _train(model: TransferModel, steps: int = 3) -> None:
    """A short "epoch": a few Adam steps on cross-entropy of random labels."""
    seqs = _seqs()
    labels = torch.randint(0, 2, (len(seqs),), generator=torch.Generator().manual_seed(2))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    for _ in range(steps):  # >= 2: Down gets no gradient while Up is still zero
        optimizer.zero_grad()
        F.cross_entropy(model(seqs), labels).backward()
        optimizer.step()


# ----------------------------------------------------------------------------- strategies


@pytest.mark.parametrize(("strategy", "insertion"), CASES)
def test_strategy_trains_exactly_its_tensors(strategy, insertion):
    model = _model()
    apply_strategy(model, strategy, insertion=insertion)
    before = _snapshot(model)
    _train(model)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"{strategy}: trainable {name} did not change"
        else:
            assert torch.equal(p, before[name]), f"{strategy}: frozen {name} changed"


def _trainable_names(strategy: str, **kwargs) -> set[str]:
    model = _model()
    apply_strategy(model, strategy, **kwargs)
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_trainable_sets_per_strategy():
    head = {"head.weight", "head.bias"}
    last = len(DILATIONS) - 1
    last_block = {
        f"backbone.blocks.{last}.{layer}.{t}" for layer in ("conv2", "ln2") for t in ("weight", "bias")
    }
    first_layers = {
        f"backbone.blocks.{last}.{layer}.{t}" for layer in ("conv1", "ln1") for t in ("weight", "bias")
    }
    all_names = {name for name, _ in _model().named_parameters()}
    assert _trainable_names("fine_cls") == head
    assert _trainable_names("fine_last1") == head | last_block
    assert _trainable_names("fine_last2") == head | last_block | first_layers
    assert _trainable_names("fine_all") == all_names
    assert _trainable_names("scratch") == all_names
    patched = _trainable_names("peterrec", train_norms="none")
    assert head < patched and all(".branch." in n for n in patched - head)
    ln2 = _trainable_names("peterrec", train_norms="ln2") - patched
    assert ln2 == {f"backbone.blocks.{i}.ln2.{t}" for i in range(len(DILATIONS)) for t in ("weight", "bias")}
    norms = _trainable_names("peterrec", train_norms="all") - patched
    assert len(norms) == 4 * len(DILATIONS) and all(".ln" in n for n in norms)
    # block_parallel wraps each block, so its norms live one level deeper.
    block_norms = _trainable_names("peterrec", insertion="block_parallel") - head
    assert {n for n in block_norms if ".branch." not in n} == {
        f"backbone.blocks.{i}.block.ln2.{t}" for i in range(len(DILATIONS)) for t in ("weight", "bias")
    }


@pytest.mark.parametrize(("strategy", "insertion"), CASES)
def test_report_counts_are_exact(strategy, insertion):
    model = _model()
    report = apply_strategy(model, strategy, insertion=insertion)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.strategy == strategy
    assert report.trainable == report.stored == trainable
    assert report.total == sum(p.numel() for p in model.parameters())
    assert report.percent == pytest.approx(100 * trainable / report.total)
    assert sum(t.numel() for t in trainable_state_dict(model).values()) == trainable
    frozen = frozen_state_dict(model)
    assert set(frozen).isdisjoint(trainable_state_dict(model))
    assert sum(t.numel() for t in frozen.values()) == report.total - trainable


@pytest.mark.parametrize(("insertion", "n_patches"), [("serial", 4), ("parallel", 4), ("block_parallel", 2)])
def test_peterrec_counts(insertion, n_patches):
    model = _model()
    head = count_parameters(model.head)
    unpatched_total = count_parameters(model)
    report = apply_strategy(model, "peterrec", insertion=insertion, ratio=0.25)
    patches = patch_parameter_count(CHANNELS, 0.25, n_patches)
    ln2 = 2 * CHANNELS * len(DILATIONS)
    assert report.trainable == patches + head + ln2
    assert report.total == unpatched_total + patches
    assert apply_strategy(_model(), "fine_cls").trainable == head


def test_report_str_reads_like_peft():
    model = _model()
    report = apply_strategy(model, "fine_cls")
    assert str(report) == (
        f"trainable params: {report.trainable:,} || all params: {report.total:,} "
        f"|| trainable%: {report.percent:.2f}"
    )


@pytest.mark.parametrize("strategy", ["peter_zero", "scratch"])
def test_reinitialised_backbone_is_seeded(strategy):
    pretrained = TransferModel(_backbone(seed=7), ClassifierHead(CHANNELS, 2))
    runs = {}
    for seed in (0, 0, 1):
        model = copy.deepcopy(pretrained)
        apply_strategy(model, strategy, seed=seed)
        runs.setdefault(seed, []).append(base_state_dict(model.backbone))
    (a, b), (c,) = runs[0], runs[1]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["item_encoder.embedding.weight"], c["item_encoder.embedding.weight"])
    pretrained_state = pretrained.backbone.state_dict()
    for key in ("item_encoder.embedding.weight", "blocks.0.conv1.weight"):
        assert not torch.equal(a[key], pretrained_state[key])
    # "As a fresh NextItNet would be": the same tensors as a new backbone built after manual_seed(seed).
    fresh = _backbone(seed=0).state_dict()
    assert all(torch.equal(a[k], fresh[k]) for k in fresh)


def test_apply_strategy_leaves_global_rng_alone():
    model = _model()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    apply_strategy(model, "peter_zero", seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("insertion", ["serial", "parallel", "block_parallel"])
@pytest.mark.parametrize("causal", [True, False])
def test_patched_model_equals_unpatched_at_init(insertion, causal):
    model = _model(causal=causal).eval()
    seqs = _seqs()
    with torch.no_grad():
        before = model(seqs)
        apply_strategy(model, "peterrec", insertion=insertion)
        after = model(seqs)
    assert (after - before).abs().max() < 1e-6


def test_unknown_choices_raise():
    with pytest.raises(ValueError, match="fine_last2"):
        apply_strategy(_model(), "fine_last3")
    with pytest.raises(ValueError, match="ln2"):
        apply_strategy(_model(), "peterrec", train_norms="ln3")
    with pytest.raises(ValueError, match="block_parallel"):
        apply_strategy(_model(), "peterrec", insertion="sideways")


# ----------------------------------------------------------------------------- user representation


def test_causal_representation_reads_appended_cls():
    model = _model().eval()
    seqs = _seqs()
    with torch.no_grad():
        user = model.user_representation(seqs)
        with_cls = torch.cat([seqs, torch.full((len(seqs), 1), CLS)], dim=1)
        expected = model.backbone(with_cls)[:, -1]
        assert torch.equal(user, expected)
        # Extra left padding changes nothing.
        padded = torch.cat([torch.full((len(seqs), 5), PAD), seqs], dim=1)
        assert torch.allclose(model.user_representation(padded), user, atol=1e-6)
        # The representation depends on the [CLS] row.
        model.backbone.item_encoder.embedding.weight[CLS] += 1.0
        assert not torch.allclose(model.user_representation(seqs), user)


def test_causal_backbone_refuses_first_last_only():
    with pytest.raises(ValueError, match="non-causal"):
        _model(causal=True, pooling="first_last")
    with pytest.raises(ValueError, match="cls_end"):
        _model(causal=False, pooling="max")


def test_causal_mean_pooling_averages_real_prefixes():
    model = _model(causal=True, pooling="mean").eval()
    seqs = torch.tensor([[PAD, PAD, 5, 6, 7]])
    with torch.no_grad():
        user = model.user_representation(seqs)
        padded = model.user_representation(torch.cat([torch.full((1, 4), PAD), seqs], dim=1))
        hidden = model.backbone(seqs)
    assert torch.allclose(user, hidden[0, 2:].mean(0, keepdim=True), atol=1e-6)
    assert torch.allclose(padded, user, atol=1e-6)


@pytest.mark.parametrize("pooling", ["auto", "cls_end", "mean", "first_last"])
def test_non_causal_poolings_ignore_padding(pooling):
    model = _model(causal=False, pooling=pooling).eval()
    seqs = _seqs()
    padded = torch.cat([torch.full((len(seqs), 3), PAD), seqs], dim=1)
    with torch.no_grad():
        assert torch.allclose(model.user_representation(padded), model.user_representation(seqs), atol=1e-6)


def test_mean_pooling_excludes_pads():
    model = _model(causal=False, pooling="mean").eval()
    seqs = torch.tensor([[PAD, PAD, 5, 6, 7]])
    with torch.no_grad():
        hidden = model.backbone(seqs)
        user = model.user_representation(seqs)
    # Pad hidden states are zero, so a mean over all 5 positions would be 3/5 of this.
    assert torch.allclose(user, hidden[0, 2:].mean(0, keepdim=True), atol=1e-6)


def test_first_last_pooling_by_hand():
    model = _model(causal=False, pooling="first_last").eval()
    seqs = torch.tensor([[PAD, PAD, 5, 6, 7], [8, 9, 10, 11, 12], [PAD, PAD, PAD, PAD, 13]])
    with torch.no_grad():
        hidden = model.backbone(seqs)
        user = model.user_representation(seqs)
    expected = torch.stack(
        [(hidden[0, 2] + hidden[0, 4]) / 2, (hidden[1, 0] + hidden[1, 4]) / 2, hidden[2, 4]]
    )
    assert torch.allclose(user, expected, atol=1e-6)


# ----------------------------------------------------------------------------- trainable [CLS]


def test_train_cls_starts_from_backbone_row():
    plain, owned = _model().eval(), _model(train_cls=True).eval()
    assert torch.equal(owned.cls_embedding, plain.backbone.item_encoder.embedding.weight[CLS])
    seqs = _seqs()
    with torch.no_grad():
        assert torch.equal(owned(seqs), plain(seqs))


@pytest.mark.parametrize("strategy", ["peterrec", "fine_cls", "fine_all"])
def test_train_cls_trains_own_copy_only(strategy):
    model = _model(train_cls=True)
    apply_strategy(model, strategy)
    assert model.cls_embedding.requires_grad
    cls_before = model.cls_embedding.detach().clone()
    row_before = model.backbone.item_encoder.embedding.weight[CLS].detach().clone()
    _train(model)
    assert not torch.equal(model.cls_embedding, cls_before)
    assert torch.equal(model.backbone.item_encoder.embedding.weight[CLS], row_before)


def test_cls_hook_does_not_outlive_the_call():
    model = _model(train_cls=True)
    with torch.no_grad():
        model.cls_embedding += 1.0
        model(_seqs())
        seqs = torch.tensor([[5, CLS]])
        expected = model.backbone.item_encoder.embedding.weight[CLS]
        assert torch.equal(model.backbone.item_encoder.embedding(seqs)[0, 1], expected)


# ----------------------------------------------------------------------------- heads


def test_classifier_head_init():
    head = ClassifierHead(CHANNELS, 3)
    assert head.weight.shape == (3, CHANNELS) and head.weight.abs().max() <= 0.04
    assert torch.equal(head.bias, torch.zeros(3))
    assert head(torch.randn(5, CHANNELS)).shape == (5, 3)


def test_target_item_head_sampled_scores_match_full():
    torch.manual_seed(0)
    head = TargetItemHead(CHANNELS, 30)
    with torch.no_grad():
        head.bias.normal_()
    user = torch.randn(4, CHANNELS)
    columns = torch.randint(0, 30, (4, 6))
    full = head(user)
    assert full.shape == (4, 30)
    assert torch.allclose(head.logits_for(user, columns), full.gather(1, columns), atol=1e-6)
    assert torch.allclose(head.logits_for(user, columns[0]), full[:, columns[0]], atol=1e-6)


def test_next_item_head_wraps_output():
    output = ItemOutput(NUM_ITEMS, CHANNELS)
    head = NextItemHead(output)
    user = torch.randn(3, CHANNELS)
    assert torch.equal(head(user), output(user))
    columns = torch.tensor([[0, 5], [1, 2], [39, 3]])
    assert torch.allclose(head.logits_for(user, columns), output(user).gather(1, columns), atol=1e-6)
    model = TransferModel(_backbone(), head)
    assert model(_seqs()).shape == (8, NUM_ITEMS)
