"""task.history: full — the whole history in windows, each with its own [CLS], window vectors averaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from peterrec.commands.finetune import run_finetune
from peterrec.config import FinetuneConfig, load_config
from peterrec.errors import ConfigError
from peterrec.model.backbone import NextItNet
from peterrec.model.transfer import TransferModel
from peterrec.runs import load_backbone, load_run
from peterrec.tasks.base import history_windows, input_matrix
from peterrec.tokens import PAD

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "v0.1.0"
QUICK = ["data.max_len=5", "train.epochs=1", "train.progress=false", "train.device=cpu", "task.history=full"]


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def test_windows_by_hand():
    assert history_windows(np.arange(10, 17), 3).tolist() == [[0, 0, 10], [11, 12, 13], [14, 15, 16]]
    assert history_windows(np.array([5]), 3).tolist() == [[0, 0, 5]]
    out = input_matrix([np.arange(10, 17), np.array([5, 6])], max_len=4, history="full")
    assert out.shape == (2, 3, 3)
    assert out[1].tolist() == [[PAD] * 3, [PAD] * 3, [PAD, 5, 6]]
    # flattened, the windows are the sequence left-padded: what the simple baselines read
    assert out[0].reshape(-1).tolist()[-7:] == list(range(10, 17))
    assert input_matrix([np.arange(10, 17)], max_len=4).tolist() == [[14, 15, 16]]  # recent: unchanged


@pytest.mark.parametrize("pooling", ["cls_end", "mean"])
def test_window_vectors_are_averaged_over_windows_with_items(pooling):
    torch.manual_seed(0)
    model = TransferModel(NextItNet(30, 8, (1, 2)), torch.nn.Identity(), pooling=pooling).eval()
    windows = torch.tensor([[[0, 0, 0], [0, 0, 5], [6, 7, 8]]])
    with torch.no_grad():
        pooled = model.user_representation(windows)
        each = model.user_representation(torch.tensor([[0, 0, 5], [6, 7, 8]]))
    assert torch.allclose(pooled[0], each.mean(0), atol=1e-6)


def test_full_history_trains_loads_and_recommends(tmp_path, cli):
    gender = REPO_ROOT / "configs" / "finetune" / "sample_gender.yaml"
    config = load_config(FinetuneConfig, gender, QUICK)
    run_dir = run_finetune(config, FIXTURES / "backbone", strategy="peterrec", out=tmp_path / "gender")
    run = load_run(run_dir)
    assert run.config.task.history == "full"
    result = cli("recommend", run_dir, "--user", "u00001")
    assert result.exit_code == 0 and '"probabilities"' in result.output
    coldrec = REPO_ROOT / "configs" / "finetune" / "sample_coldrec.yaml"
    config = load_config(FinetuneConfig, coldrec, QUICK)
    run_dir = run_finetune(config, FIXTURES / "backbone", strategy="fine_cls", out=tmp_path / "coldrec")
    assert (run_dir / "manifest.json").is_file()


def test_history_full_is_refused_for_nextitem():
    nextitem = REPO_ROOT / "configs" / "finetune" / "sample_nextitem.yaml"
    with pytest.raises(ConfigError, match="task.history"):
        load_config(FinetuneConfig, nextitem, ["task.history=full"])
    assert load_backbone(FIXTURES / "backbone").backbone.causal
