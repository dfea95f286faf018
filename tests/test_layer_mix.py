"""strategy.layer_mix: the user vector pools every layer, standardised, mixed by learned softmax weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT

from peterrec.commands.finetune import run_finetune
from peterrec.config import FinetuneConfig, load_config
from peterrec.model.backbone import NextItNet
from peterrec.model.transfer import TransferModel, apply_strategy
from peterrec.runs import load_backbone, load_run
from peterrec.tasks.base import model_batch
from peterrec.tokens import PAD

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "v0.1.0"
GENDER = REPO_ROOT / "configs" / "finetune" / "sample_gender.yaml"
QUICK = ["data.max_len=6", "train.epochs=2", "train.progress=false", "train.device=cpu"]
SEQS = torch.tensor([[0, 0, 5, 9, 7], [4, 8, 6, 10, 11]])


def masked_mean(hidden: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    keep = (seqs != PAD).unsqueeze(-1).float()
    return (hidden * keep).sum(1) / keep.sum(1)


@pytest.mark.parametrize("pooling", ["mean", "cls_end"])
def test_the_mix_is_a_softmax_weighted_sum_of_standardised_layer_vectors(pooling):
    torch.manual_seed(0)
    backbone = NextItNet(30, 8, (1, 2, 4))
    model = TransferModel(backbone, torch.nn.Identity(), pooling=pooling, layer_mix=True).eval()
    assert model.layer_weights.shape == (4,) and not model.layer_weights.any()  # items + 3 blocks
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        mixed = model.user_representation(SEQS)
        seqs = SEQS if pooling == "mean" else torch.cat([SEQS, torch.full((2, 1), 2)], dim=1)
        states = backbone.layer_states(seqs)
        pooled = [masked_mean(s, seqs) if pooling == "mean" else s[:, -1] for s in states]
        expected = sum(
            w * F.layer_norm(p, (8,))
            for w, p in zip(torch.softmax(model.layer_weights, 0), pooled, strict=True)
        )
        assert torch.allclose(mixed, expected, atol=1e-5)
        assert torch.equal(states[-1], backbone(seqs))  # the top layer is the backbone's output


def test_every_strategy_trains_the_mix_and_counts_it_in_the_head():
    torch.manual_seed(0)
    for strategy in ("peterrec", "fine_cls", "fine_all"):
        model = TransferModel(NextItNet(30, 8, (1, 2)), torch.nn.Linear(8, 2), pooling="mean", layer_mix=True)
        report = apply_strategy(model, strategy)
        assert model.layer_weights.requires_grad
        assert report.head == 8 * 2 + 2 + 3  # linear head + the three layer weights


def test_a_finetuned_mix_is_saved_and_restored(tmp_path):
    config = load_config(FinetuneConfig, GENDER, [*QUICK, "strategy.layer_mix=true", "strategy.pooling=mean"])
    run_dir = run_finetune(config, FIXTURES / "backbone", strategy="fine_cls", out=tmp_path / "run")
    run = load_run(run_dir)  # the weights start at zero: non-zero ones were trained and restored
    assert run.model.layer_weights is not None and run.model.layer_weights.abs().sum() > 0
    base = load_backbone(FIXTURES / "backbone")
    frozen = base.backbone.state_dict()
    assert all(torch.equal(frozen[k], v) for k, v in run.model.backbone.state_dict().items() if k in frozen)


@pytest.mark.parametrize(("pooling", "layer_mix"), [("cls_end", False), ("mean", True), ("cls_end", True)])
def test_dropping_shared_padding_columns_changes_no_user_vector(pooling, layer_mix):
    torch.manual_seed(0)
    model = TransferModel(
        NextItNet(30, 8, (1, 2, 4)), torch.nn.Identity(), pooling, layer_mix=layer_mix
    ).eval()
    padded = np.zeros((2, 40), dtype=np.int64)
    padded[0, -3:], padded[1, -5:] = [5, 9, 7], [4, 8, 6, 10, 11]
    trimmed = model_batch(padded, "cpu")
    assert trimmed.shape == (2, 5)
    with torch.no_grad():
        full = model.user_representation(torch.as_tensor(padded))
        assert torch.allclose(model.user_representation(trimmed), full, atol=1e-6)
