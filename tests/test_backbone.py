"""Backbone properties: shapes, causality, padding invariance, receptive field."""

import pytest
import torch

from peterrec import PAD
from peterrec.model.backbone import NextItNet


def _model(causal: bool, seed: int = 0) -> NextItNet:
    torch.manual_seed(seed)
    return NextItNet(50, channels=16, dilations=(1, 2), kernel_size=3, causal=causal).eval()


def test_api_shape_as_documented():
    backbone = NextItNet(30, channels=8, dilations=(1, 4) * 4, kernel_size=3, causal=True)
    seqs = torch.randint(4, 34, (3, 12))
    assert backbone(seqs).shape == (3, 12, 8)
    assert backbone.item_encoder.embedding.num_embeddings == 34
    assert backbone.receptive_field == 121


@pytest.mark.parametrize("causal", [True, False])
def test_future_items_influence_only_non_causal(causal):
    model = _model(causal)
    seqs = torch.randint(4, 54, (4, 20))
    changed = seqs.clone()
    t = 9
    changed[:, t + 1 :] = torch.randint(4, 54, (4, 20 - t - 1))
    with torch.no_grad():
        a, b = model(seqs), model(changed)
    diff_past = (a[:, : t + 1] - b[:, : t + 1]).abs().max().item()
    if causal:
        assert diff_past == 0.0
    else:
        assert diff_past > 1e-4


@pytest.mark.parametrize("causal", [True, False])
def test_extra_left_padding_changes_nothing(causal):
    model = _model(causal)
    seqs = torch.randint(4, 54, (3, 15))
    seqs[0, :4] = PAD
    padded = torch.cat([torch.full((3, 11), PAD), seqs], dim=1)
    with torch.no_grad():
        a, b = model(seqs), model(padded)[:, 11:]
    real = (seqs != PAD).unsqueeze(-1)
    assert torch.allclose(a * real, b * real, atol=1e-5)
    assert (b[~real.expand_as(b)] == 0).all()


def test_long_max_len_warns(caplog):
    model = _model(True)
    model.check_length(model.receptive_field + 1)
    assert "receptive field" in caplog.text
