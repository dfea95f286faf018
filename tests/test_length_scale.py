"""strategy.length_scale: the user vector is scaled by (clicks / 64) ** a, a trained from 0.5."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT

from peterrec.commands.finetune import run_finetune
from peterrec.config import ConfigError, FinetuneConfig, load_config
from peterrec.model.backbone import NextItNet
from peterrec.model.heads import ClassifierHead
from peterrec.model.transfer import LENGTH_REFERENCE, TransferModel, apply_strategy
from peterrec.runs import PatchSwitcher, load_run

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "v0.1.0"
GENDER = REPO_ROOT / "configs" / "finetune" / "sample_gender.yaml"
QUICK = ["data.max_len=6", "train.epochs=2", "train.progress=false", "train.device=cpu"]
SEQS = torch.tensor([[0, 0, 0, 9, 7], [4, 8, 6, 10, 11]])  # 2 and 5 clicks


def models(**options) -> tuple[TransferModel, TransferModel]:
    """The same backbone without and with the length scale."""
    torch.manual_seed(0)
    backbone = NextItNet(30, 8, (1, 2))
    plain = TransferModel(backbone, torch.nn.Identity(), **options).eval()
    scaled = TransferModel(backbone, torch.nn.Identity(), length_scale=True, **options).eval()
    return plain, scaled


@pytest.mark.parametrize("options", [{"pooling": "mean"}, {"pooling": "cls_end", "layer_mix": True}])
def test_the_vector_is_scaled_by_the_square_root_of_the_clicks_at_init(options):
    plain, scaled = models(**options)
    assert scaled.length_exponent.item() == 0.5
    with torch.no_grad():
        factor = torch.tensor([2.0, 5.0]).div(LENGTH_REFERENCE).sqrt().unsqueeze(1)
        assert torch.allclose(scaled.user_representation(SEQS), plain.user_representation(SEQS) * factor)
        scaled.length_exponent.fill_(1.0)
        factor = torch.tensor([2.0, 5.0]).div(LENGTH_REFERENCE).unsqueeze(1)
        assert torch.allclose(scaled.user_representation(SEQS), plain.user_representation(SEQS) * factor)


def test_windows_count_the_clicks_of_every_window_once():
    plain, scaled = models(pooling="mean")
    windows = torch.tensor([[[0, 0, 0], [0, 0, 5], [6, 7, 8]]])  # 4 clicks over two windows
    with torch.no_grad():
        expected = plain.user_representation(windows) * (4 / LENGTH_REFERENCE) ** 0.5
        assert torch.allclose(scaled.user_representation(windows), expected)


def test_the_head_bias_the_prior_is_not_scaled():
    torch.manual_seed(0)
    model = TransferModel(NextItNet(30, 8, (1, 2)), ClassifierHead(8, 3), pooling="mean", length_scale=True)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.3, -0.2, 1.0]))
        assert torch.allclose(model(SEQS), model.head.bias.expand(2, 3))


def test_every_strategy_trains_the_exponent_and_counts_it_in_the_head():
    for strategy in ("peterrec", "fine_cls", "fine_all", "peter_zero"):
        torch.manual_seed(0)
        backbone = NextItNet(30, 8, (1, 2))
        model = TransferModel(backbone, torch.nn.Linear(8, 2), pooling="mean", length_scale=True)
        report = apply_strategy(model, strategy)
        assert model.length_exponent.requires_grad
        assert report.head == 8 * 2 + 2 + 1  # linear head + the exponent


def test_a_trained_exponent_is_saved_and_restored(tmp_path):
    overrides = [*QUICK, "strategy.length_scale=true", "strategy.pooling=mean", "train.lr=0.05"]
    config = load_config(FinetuneConfig, GENDER, overrides)
    run_dir = run_finetune(config, FIXTURES / "backbone", strategy="fine_cls", out=tmp_path / "run")
    run = load_run(run_dir)
    exponent = run.model.length_exponent
    assert exponent is not None and exponent.item() != 0.5  # it trained, and the trained value was loaded
    switcher = PatchSwitcher(FIXTURES / "backbone")
    switcher.add(run_dir, "gender")
    assert switcher.use("gender").length_exponent.item() == exponent.item()
    assert switcher.active == "gender"  # the task switched to, not the last tensor restored


def test_the_option_must_be_a_boolean():
    with pytest.raises(ConfigError, match="length_scale"):
        load_config(FinetuneConfig, GENDER, ["strategy.length_scale=sometimes"])
