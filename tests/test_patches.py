"""Model patches: identity at init, trainability, parameter counts, causality, padding, state-dict names."""

import copy

import pytest
import torch

from peterrec import PAD
from peterrec.model.adapters.bottleneck import (
    BlockParallelPatch,
    ParallelPatchedConv,
    PatchBranch,
    SerialPatchedConv,
    add_patches,
    base_state_dict,
    load_base_state_dict,
    patch_parameter_count,
    patch_parameters,
    patch_state_dict,
)
from peterrec.model.backbone import NextItNet, count_parameters

NUM_ITEMS = 40
# (insertion, parallel_form): every way a patch can be inserted.
INSERTIONS = [
    ("serial", "residual"),
    ("parallel", "residual"),
    ("parallel", "original"),
    ("block_parallel", "residual"),
]
IDENTITY_INSERTIONS = [c for c in INSERTIONS if c[1] == "residual"]


def _backbone(causal: bool, seed: int = 0) -> NextItNet:
    torch.manual_seed(seed)
    return NextItNet(NUM_ITEMS, channels=16, dilations=(1, 2, 1, 2), kernel_size=3, causal=causal).eval()


def _patched(causal: bool, insertion: str, form: str, seed: int = 0) -> tuple[NextItNet, NextItNet]:
    """(unpatched backbone, deep copy of it with patches)."""
    base = _backbone(causal, seed)
    patched = copy.deepcopy(base)
    add_patches(patched, insertion=insertion, ratio=0.25, parallel_form=form)
    return base, patched


def _randomise_branches(model: NextItNet, seed: int = 1) -> None:
    """Give every branch nonzero Up and biases, so the patches really act (and act at pad positions)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in patch_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _seqs(batch: int = 4, length: int = 14, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    seqs = torch.randint(4, NUM_ITEMS + 4, (batch, length), generator=gen)
    seqs[0, :5] = PAD
    seqs[1, :2] = PAD
    return seqs


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("insertion", "form"), IDENTITY_INSERTIONS)
def test_patched_equals_backbone_at_init(insertion, form, causal):
    base, patched = _patched(causal, insertion, form)
    seqs = _seqs()
    with torch.no_grad():
        diff = (patched(seqs) - base(seqs)).abs().max().item()
    assert diff < 1e-6


def test_wrappers_compute_their_documented_formulas():
    backbone = _backbone(causal=True)
    block = backbone.blocks[1]
    branch = PatchBranch(16, ratio=0.25)
    _randomise_branches(torch.nn.ModuleList([branch]))
    x = torch.randn(2, 7, 16)
    keep = torch.ones(2, 7, 1)
    keep[0, :3] = 0
    x = x * keep

    def expected_branch(v):  # exact (erf) GELU, not the tanh approximation
        return branch.up(torch.nn.functional.gelu(branch.down(v), approximate="none"))

    with torch.no_grad():
        c = block.conv1(x)
        assert torch.allclose(SerialPatchedConv(block.conv1, branch)(x), c + expected_branch(c))
        assert torch.allclose(ParallelPatchedConv(block.conv1, branch)(x), c + expected_branch(x))
        original = ParallelPatchedConv(block.conv1, branch, form="original")(x)
        assert torch.allclose(original, c + x + expected_branch(x))
        out = BlockParallelPatch(block, branch)(x, keep)
        assert torch.allclose(out, block(x, keep) + expected_branch(x) * keep)
        assert not torch.allclose(branch.act(x), torch.nn.functional.gelu(x, approximate="tanh"))


@pytest.mark.parametrize("causal", [True, False])
def test_original_parallel_form_is_not_identity_at_init(causal):
    base, patched = _patched(causal, "parallel", "original")
    seqs = _seqs()
    with torch.no_grad():
        diff = (patched(seqs) - base(seqs)).abs().max().item()
    assert diff > 1e-3


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("insertion", "form"), INSERTIONS)
def test_one_step_on_patches_changes_output_and_nothing_else(insertion, form, causal):
    base, patched = _patched(causal, insertion, form)
    for p in patched.parameters():
        p.requires_grad_(False)
    params = patch_parameters(patched)
    for p in params:
        p.requires_grad_(True)
    seqs = _seqs()
    before = patched(seqs).detach()
    frozen = base_state_dict(patched)
    frozen = {k: v.clone() for k, v in frozen.items()}

    optimiser = torch.optim.Adam(params, lr=1e-2)
    target = torch.randn_like(before)
    loss = ((patched(seqs) - target) ** 2).mean()
    loss.backward()
    optimiser.step()

    with torch.no_grad():
        after, reference = patched(seqs), base(seqs)
    real = (seqs != PAD).unsqueeze(-1)
    assert ((after - reference).abs() * real).max().item() > 1e-4
    assert ((after - before).abs() * real).max().item() > 1e-4
    for key, tensor in base_state_dict(patched).items():
        assert torch.equal(tensor, frozen[key]), key


@pytest.mark.parametrize(("insertion", "form"), INSERTIONS)
def test_parameter_count_matches_formula(insertion, form):
    backbone = _backbone(True)  # 4 blocks, C = 16, h = 4
    branches = add_patches(backbone, insertion=insertion, ratio=0.25, parallel_form=form)
    n = 4 if insertion == "block_parallel" else 8
    assert len(branches) == n
    assert all(isinstance(b, PatchBranch) for b in branches)
    returned = sum(p.numel() for b in branches for p in b.parameters())
    found = sum(p.numel() for p in patch_parameters(backbone))
    assert returned == found == patch_parameter_count(16, 0.25, n)
    assert patch_parameter_count(16, 0.25, n) == n * (2 * 16 * 4 + 4 + 16)


@pytest.mark.parametrize(
    ("insertion", "n", "expected"), [("serial", 16, 34048), ("block_parallel", 8, 17024)]
)
def test_default_config_parameter_count_and_share(insertion, n, expected):
    torch.manual_seed(0)
    backbone = NextItNet(1000, channels=64)
    backbone_params = count_parameters(backbone)
    branches = add_patches(backbone, insertion=insertion)
    measured = sum(p.numel() for b in branches for p in b.parameters())
    assert len(branches) == n
    assert measured == patch_parameter_count(64, 0.25, n) == expected  # h = 16: 2*64*16 + 16 + 64 = 2128 each
    assert count_parameters(backbone) == backbone_params + measured
    share = measured / backbone_params
    # Serial: 34,048 patch params vs 263,936 backbone params (12.9%; 11.4% of backbone + patches).
    assert (0.12 < share < 0.14) if insertion == "serial" else (0.06 < share < 0.07)


def test_ratio_sets_bottleneck_size():
    assert patch_parameter_count(64, 0.125, 1) == 2 * 64 * 8 + 8 + 64
    assert patch_parameter_count(4, 0.01, 1) == 2 * 4 * 1 + 1 + 4  # at least one hidden unit
    with pytest.raises(ValueError, match="ratio"):
        patch_parameter_count(64, 0.0, 1)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("insertion", "form"), INSERTIONS)
def test_future_items_do_not_reach_the_past_with_random_patches(insertion, form, causal):
    _, patched = _patched(causal, insertion, form)
    _randomise_branches(patched)
    seqs = _seqs(length=16)
    t = 8
    changed = seqs.clone()
    changed[:, t + 1 :] = torch.randint(4, NUM_ITEMS + 4, (seqs.shape[0], seqs.shape[1] - t - 1))
    with torch.no_grad():
        a, b = patched(seqs), patched(changed)
    diff_past = (a[:, : t + 1] - b[:, : t + 1]).abs().max().item()
    if causal:
        assert diff_past == 0.0
    else:  # the same check is sensitive: the non-causal model does see the future
        assert diff_past > 1e-4


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("insertion", "form"), INSERTIONS)
def test_extra_left_padding_changes_nothing_with_random_patches(insertion, form, causal):
    _, patched = _patched(causal, insertion, form)
    _randomise_branches(patched)
    seqs = _seqs()
    extra = 9
    padded = torch.cat([torch.full((seqs.shape[0], extra), PAD), seqs], dim=1)
    with torch.no_grad():
        a, b = patched(seqs), patched(padded)
    real = (seqs != PAD).unsqueeze(-1).expand_as(a)
    assert (a[real] - b[:, extra:][real]).abs().max().item() < 1e-5
    pads = (padded == PAD).unsqueeze(-1).expand_as(b)
    assert (b[pads] == 0).all()


@pytest.mark.parametrize(("insertion", "form"), INSERTIONS)
def test_state_dict_key_names(insertion, form):
    base, patched = _patched(True, insertion, form)
    keys = set(patched.state_dict())
    patch_keys = set(patch_state_dict(patched))
    if insertion == "block_parallel":
        assert isinstance(patched.blocks[0], BlockParallelPatch)
        assert {
            "blocks.0.block.conv1.weight",
            "blocks.0.branch.down.weight",
            "blocks.0.branch.up.bias",
        } <= keys
    else:
        wrapper = SerialPatchedConv if insertion == "serial" else ParallelPatchedConv
        assert isinstance(patched.blocks[0].conv1, wrapper)
        assert {
            "blocks.0.conv1.conv.weight",
            "blocks.0.conv1.branch.down.weight",
            "blocks.3.conv2.conv.bias",
        } <= keys
    assert patch_keys and all(".branch." in k for k in patch_keys)
    stored = sum(v.numel() for v in patch_state_dict(patched).values())
    assert stored == sum(p.numel() for p in patch_parameters(patched))
    # Full names when the backbone sits inside a larger model.
    outer = torch.nn.ModuleDict({"backbone": patched})
    assert set(patch_state_dict(outer)) == {f"backbone.{k}" for k in patch_keys}
    assert set(base_state_dict(outer)) == {f"backbone.{k}" for k in base.state_dict()}


@pytest.mark.parametrize(("insertion", "form"), INSERTIONS)
def test_base_state_dict_round_trip(insertion, form):
    base, patched = _patched(True, insertion, form)
    _randomise_branches(patched)
    branches_before = {k: v.clone() for k, v in patch_state_dict(patched).items()}

    exported = base_state_dict(patched)
    assert exported.keys() == base.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in base.state_dict().items())

    other = _backbone(True, seed=7)  # a different "pretrained" backbone to load
    load_base_state_dict(patched, other.state_dict())
    reloaded = base_state_dict(patched)
    assert all(torch.equal(reloaded[k], v) for k, v in other.state_dict().items())
    after = patch_state_dict(patched)
    assert all(torch.equal(after[k], v) for k, v in branches_before.items())

    # Zeroing Up again makes the patched model compute exactly what the loaded backbone computes.
    if form == "residual":
        with torch.no_grad():
            for module in patched.modules():
                if isinstance(module, PatchBranch):
                    module.up.weight.zero_()
                    module.up.bias.zero_()
        seqs = _seqs()
        with torch.no_grad():
            assert (patched(seqs) - other.eval()(seqs)).abs().max().item() < 1e-6


def test_load_base_state_dict_is_strict():
    base, patched = _patched(True, "serial", "residual")
    state = base.state_dict()
    missing = {k: v for k, v in state.items() if k != "blocks.0.ln1.weight"}
    with pytest.raises(ValueError, match="blocks.0.ln1.weight"):
        load_base_state_dict(patched, missing)
    with pytest.raises(ValueError, match="extra.weight"):
        load_base_state_dict(patched, {**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks\.0\.conv1\.branch"):
        load_base_state_dict(patched, patched.state_dict())  # patched names are not base names


@pytest.mark.parametrize(("insertion", "form"), INSERTIONS)
def test_adding_patches_twice_raises(insertion, form):
    _, patched = _patched(True, insertion, form)
    with pytest.raises(ValueError, match="already has patches"):
        add_patches(patched, insertion=insertion, parallel_form=form)


def test_unknown_choices_name_the_valid_ones():
    with pytest.raises(ValueError, match="serial, serial_block, parallel, block_parallel"):
        add_patches(_backbone(True), insertion="adapter")
    with pytest.raises(ValueError, match="residual, original"):
        add_patches(_backbone(True), insertion="parallel", parallel_form="skip")
