"""Sparse item tables for huge vocabularies: sparse gradients, SparseAdam, exact resume, config checks."""

import json
import logging

import pytest
import torch
from conftest import REPO_ROOT

from peterrec.commands.pretrain import run_pretrain
from peterrec.config import PretrainConfig, TrainConfig, load_config
from peterrec.errors import ConfigError
from peterrec.model.backbone import NextItNet
from peterrec.model.item_encoder import ItemOutput
from peterrec.model.next_item import NextItemModel
from peterrec.training.objectives import autoregressive_batch, pretrain_loss
from peterrec.training.samplers import make_sampler
from peterrec.training.trainer import Trainer

SAMPLE = REPO_ROOT / "configs" / "pretrain" / "sample_autoregressive.yaml"
SPARSE = ["model.sparse_embedding=true", "objective.softmax=sampled", "objective.num_samples=50"]


def test_sparse_output_rows_match_dense_and_give_sparse_gradients():
    torch.manual_seed(0)
    dense, sparse = ItemOutput(100, 8), ItemOutput(100, 8, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    hidden, columns = torch.randn(5, 8), torch.tensor([[1, 7], [3, 3], [0, 99], [5, 6], [2, 2]])
    a, b = dense.logits_for(hidden, columns), sparse.logits_for(hidden, columns)
    assert torch.allclose(a, b)
    b.sum().backward()
    a.sum().backward()
    assert sparse.weight.grad.is_sparse and not dense.weight.grad.is_sparse
    assert torch.allclose(sparse.weight.grad.to_dense(), dense.weight.grad)


def test_sparse_needs_sampled_softmax_and_no_weight_decay(tmp_path):
    with pytest.raises(ConfigError, match="needs objective.softmax: sampled"):
        load_config(PretrainConfig, SAMPLE, ["model.sparse_embedding=true"])
    model = NextItemModel(NextItNet(20, 8, (1,), sparse_embedding=True), ItemOutput(20, 8, sparse=True), 5)
    config = TrainConfig(weight_decay=0.1, progress=False)
    with pytest.raises(ConfigError, match="weight_decay must be 0"):
        Trainer(
            model,
            config,
            steps_per_epoch=1,
            step_loss=None,
            validate=None,
            work_dir=tmp_path,
            device="cpu",
            monitor="valid/ndcg@10",
        )


def _trainer(tmp_path, fail_at: int | None = None):
    torch.manual_seed(0)
    num_items = 500
    model = NextItemModel(
        NextItNet(num_items, 8, (1, 2), sparse_embedding=True), ItemOutput(num_items, 8, sparse=True), 10
    )
    sampler = make_sampler("log_uniform", num_items)
    data = torch.randint(4, num_items + 4, (64, 11), generator=torch.Generator().manual_seed(1))
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, progress=False, checkpoint_every=3, patience=5)

    def step_loss(epoch, step, generator):
        if fail_at is not None and epoch * 8 + step == fail_at:
            raise KeyboardInterrupt
        inputs, targets = autoregressive_batch(data[step * 8 : (step + 1) * 8])
        hidden = model(inputs)
        loss = pretrain_loss(
            model.output,
            hidden,
            targets,
            softmax="sampled",
            sampler=sampler,
            num_samples=20,
            generator=generator,
        )
        return loss, int(inputs.numel())

    def validate():
        return {"valid/ndcg@10": 0.0}

    trainer = Trainer(
        model,
        config,
        steps_per_epoch=8,
        step_loss=step_loss,
        validate=validate,
        work_dir=tmp_path,
        device=torch.device("cpu"),
        monitor="valid/ndcg@10",
    )
    return model, trainer


def test_sparse_training_uses_sparse_adam_and_resumes_exactly(tmp_path):
    model, trainer = _trainer(tmp_path / "a")
    assert [type(o).__name__ for o in trainer.optimizers] == ["Adam", "SparseAdam"]
    trainer.fit()
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    _, interrupted = _trainer(tmp_path / "b", fail_at=11)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed_model, resumed = _trainer(tmp_path / "b")
    resumed.fit(resume=True)
    assert resumed.state.global_step == 16
    for key, value in resumed_model.state_dict().items():
        assert torch.equal(value, straight[key]), key


def test_sparse_pretraining_learns_the_sample(tmp_path, one_thread):
    logging.disable(logging.INFO)
    overrides = ["train.progress=false", f"data.path={REPO_ROOT / 'data' / 'sample' / 'source.csv'}"]
    overrides += ["model.channels=32", "data.max_len=20", "train.epochs=8", *SPARSE]
    run = run_pretrain(load_config(PretrainConfig, SAMPLE, overrides), out=tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["metrics"]["test/ndcg@10"] > manifest["baselines"]["popularity"]["test/ndcg@10"] + 0.1
