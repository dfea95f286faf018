"""Training profile heads with few labels: log loss as a stopping score, class weights, head dropout."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from peterrec.commands.finetune import run_finetune
from peterrec.config import FinetuneConfig, load_config
from peterrec.data.sequences import drop_clicks
from peterrec.errors import ConfigError
from peterrec.evaluation.metrics import classification_metrics
from peterrec.model.heads import ClassifierHead
from peterrec.runs import load_backbone, load_run
from peterrec.tasks.profile import ProfileTask

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "v0.1.0"
GENDER = REPO_ROOT / "configs" / "finetune" / "sample_gender.yaml"
QUICK = ["data.max_len=19", "train.progress=false", "train.device=cpu"]


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def test_log_loss_by_hand():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [1.0, 0.0]])
    out = classification_metrics(probs, np.array([0, 0, 1]))
    assert out["log_loss"] == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(1e-15)) / 3)


def test_balanced_log_loss_by_hand():
    probs = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.3, 0.3, 0.4]])
    out = classification_metrics(probs, np.array([0, 0, 1, 1]))  # class 2 never occurs: not averaged in
    class0, class1 = -(np.log(0.9) + np.log(0.5)) / 2, -(np.log(0.8) + np.log(0.3)) / 2
    assert out["balanced_log_loss"] == pytest.approx((class0 + class1) / 2)
    # one user of class 1 weighs as much as the three of class 0, unlike in the plain log loss
    out = classification_metrics(np.array([[0.9, 0.1]] * 3 + [[0.9, 0.1]]), np.array([0, 0, 0, 1]))
    assert out["balanced_log_loss"] == pytest.approx((-np.log(0.9) - np.log(0.1)) / 2)
    assert out["log_loss"] == pytest.approx((-3 * np.log(0.9) - np.log(0.1)) / 4)


def test_balanced_class_weights_follow_the_training_labels():
    config = load_config(FinetuneConfig, GENDER, [*QUICK, "task.class_weights=balanced"])
    task = ProfileTask(config, load_backbone(FIXTURES / "backbone"))
    counts = np.bincount(task.splits["train"].targets, minlength=2)
    assert task.class_weights.tolist() == pytest.approx((counts.sum() / (2 * counts)).tolist())
    plain = ProfileTask(load_config(FinetuneConfig, GENDER, QUICK), load_backbone(FIXTURES / "backbone"))
    assert plain.class_weights is None
    # The logistic-regression baselines weigh classes the same way (else macro-F1 compares unlike models).
    assert task.baseline_class_weight == "balanced" and plain.baseline_class_weight is None
    weighted = task.baseline_probabilities("bag_of_items_lr", "test")
    unweighted = plain.baseline_probabilities("bag_of_items_lr", "test")
    minority = int(np.argmin(counts))
    assert weighted[:, minority].mean() > unweighted[:, minority].mean()


def test_head_dropout_acts_only_while_training():
    torch.manual_seed(0)
    head = ClassifierHead(8, 3, dropout=0.5)
    plain = ClassifierHead(8, 3)
    plain.load_state_dict(head.state_dict())  # no tensors of its own: saved heads load either way
    user = torch.randn(4, 8)
    assert torch.equal(head.eval()(user), plain.eval()(user))
    assert not torch.equal(head.train()(user), plain.train()(user))
    with pytest.raises(ValueError, match="dropout"):
        ClassifierHead(8, 3, dropout=1.0)


def test_options_are_for_profile_tasks_only():
    coldrec = REPO_ROOT / "configs" / "finetune" / "sample_coldrec.yaml"
    for option in ("task.class_weights=balanced", "task.head_dropout=0.2"):
        with pytest.raises(ConfigError, match="task.type profile"):
            load_config(FinetuneConfig, coldrec, [option])


def test_early_stopping_on_log_loss_keeps_the_lowest(tmp_path):
    shutil.copytree(FIXTURES / "backbone", tmp_path / "backbone")
    overrides = [*QUICK, "train.epochs=4", "train.patience=4", "train.monitor=valid/log_loss"]
    overrides += ["task.class_weights=balanced", "task.head_dropout=0.2"]
    config = load_config(FinetuneConfig, GENDER, overrides)
    run_dir = run_finetune(config, tmp_path / "backbone", strategy="fine_cls", out=tmp_path / "run")
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["valid/log_loss"] for row in history]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["best_epoch"] == 1 + int(np.argmin(losses))
    assert manifest["metrics"]["valid/log_loss"] == pytest.approx(min(losses), abs=1e-5)
    assert load_run(run_dir).model.head.dropout == 0.0  # inference: the recorded head without dropout


def test_transfer_baselines_sit_beside_the_simple_ones():
    config = load_config(FinetuneConfig, GENDER, QUICK)
    task = ProfileTask(config, load_backbone(FIXTURES / "backbone"))
    rows, test_outputs = task.baselines()
    assert list(rows) == list(test_outputs) == list(ProfileTask.baseline_names)
    assert list(rows) == ["majority", "bag_of_items_lr", "linear_probe", "mean_item_embedding_lr"]
    for name in ("linear_probe", "mean_item_embedding_lr"):
        assert 0.0 <= rows[name]["test/accuracy"] <= 1.0 and 0.0 <= rows[name]["test/auc"] <= 1.0
    # The per-user test outputs give back the recorded metrics (what compare pools over folds).
    test = task.splits["test"]
    for name, outputs in test_outputs.items():
        assert np.array_equal(outputs["labels"], test.targets)
        assert outputs["probabilities"].shape == (len(test.users), len(task.classes))
        recomputed = classification_metrics(outputs["probabilities"], outputs["labels"])
        assert recomputed["auc"] == pytest.approx(rows[name]["test/auc"], abs=1e-4)
        assert outputs["accuracy"].mean() == pytest.approx(rows[name]["test/accuracy"])
    train = task.probe_features["linear_probe"]["train"]
    assert train.shape == (len(task.splits["train"]), 16)  # the fixture backbone's channels


def test_a_pooling_the_backbone_cannot_use_is_a_config_error():
    config = load_config(FinetuneConfig, GENDER, [*QUICK, "strategy.pooling=first_last"])
    with pytest.raises(ConfigError, match="strategy.pooling"):
        ProfileTask(config, load_backbone(FIXTURES / "backbone"))


def _kept_clicks(row: torch.Tensor) -> list[int]:
    return [int(x) for x in row if x != 0]


def test_click_dropout_keeps_clicks_in_order_and_left_padded():
    batch = torch.tensor([[0, 0, 5, 6, 7, 8, 9, 10], [0] * 8, [11, 12, 13, 14, 15, 16, 17, 18]])
    for seed in range(20):
        out = drop_clicks(batch, 0.5, torch.Generator().manual_seed(seed))
        assert out.shape == batch.shape
        for before, after in zip(batch, out, strict=True):
            kept = _kept_clicks(after)
            real = (after != 0).nonzero().flatten().tolist()
            assert real == list(range(len(after) - len(kept), len(after)))  # left-padded again
            it = iter(_kept_clicks(before))
            assert all(click in it for click in kept)  # a subsequence: the order is kept
            assert bool(kept) == bool(_kept_clicks(before))  # a user never loses every click
    windows = batch.reshape(1, 3, 8)
    assert drop_clicks(windows, 0.5, torch.Generator().manual_seed(3)).shape == windows.shape


def test_click_dropout_drops_at_its_rate_and_repeats_with_the_generator():
    batch = torch.arange(4, 4 + 200 * 50).reshape(200, 50)
    out = drop_clicks(batch, 0.3, torch.Generator().manual_seed(0))
    assert (out != 0).float().mean().item() == pytest.approx(0.7, abs=0.02)
    again = drop_clicks(batch, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, drop_clicks(batch, 0.3, torch.Generator().manual_seed(1)))
    everything = drop_clicks(batch, 0.999999, torch.Generator().manual_seed(0))
    assert torch.equal(everything[:, -1], batch[:, -1]) and (everything[:, :-1] == 0).all()


def test_click_dropout_changes_training_inputs_only():
    config = load_config(FinetuneConfig, GENDER, [*QUICK, "task.click_dropout=0.5"])
    task = ProfileTask(config, load_backbone(FIXTURES / "backbone"))
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, inputs):
            seen.append(inputs)
            return torch.zeros(len(inputs), len(task.classes), requires_grad=True)

    model = Recorder()
    indices = np.arange(8)
    task.step_loss(model, indices, torch.Generator().manual_seed(0), "cpu")
    full, _ = task.batch("train", indices, "cpu")
    assert (seen[0] != 0).sum() < (full != 0).sum()
    task.evaluate(model, "valid", "cpu")
    valid = torch.as_tensor(task.splits["valid"].inputs)
    assert (seen[1] != 0).sum() == (valid != 0).sum()
    with pytest.raises(ConfigError, match="click_dropout"):
        nextitem = REPO_ROOT / "configs" / "finetune" / "sample_nextitem.yaml"
        load_config(FinetuneConfig, nextitem, ["task.click_dropout=0.2"])
