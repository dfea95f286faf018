"""Pretraining variants end to end on the sample: masked objective, sampled softmax, bf16 autocast.

Sampled softmax (50 of 300 items) learns more slowly per epoch than the full softmax, hence 8 epochs.
"""

import json
import logging

import pytest
import torch
from conftest import REPO_ROOT

from peterrec.commands.pretrain import run_pretrain
from peterrec.config import PretrainConfig, load_config

SOURCE = REPO_ROOT / "data" / "sample" / "source.csv"
TINY = [
    "train.progress=false",
    f"data.path={SOURCE}",
    "model.channels=32",
    "data.max_len=20",
    "train.epochs=3",
]


def _run(tmp_path, config_name, *overrides):
    logging.disable(logging.INFO)
    path = REPO_ROOT / "configs" / "pretrain" / f"sample_{config_name}.yaml"
    config = load_config(PretrainConfig, path, [*TINY, *overrides])
    run = run_pretrain(config, out=tmp_path / "run")
    return json.loads((run / "manifest.json").read_text())


@pytest.mark.parametrize(
    "config_name, overrides",
    [
        ("masked", []),
        (
            "autoregressive",
            [
                "objective.softmax=sampled",
                "objective.sampler=log_uniform",
                "objective.num_samples=50",
                "train.epochs=8",
            ],
        ),
        (
            "autoregressive",
            [
                "objective.softmax=sampled",
                "objective.sampler=popularity",
                "objective.num_samples=50",
                "train.epochs=8",
            ],
        ),
        ("autoregressive", ["train.precision=bf16"]),
    ],
)
def test_variants_learn_the_sample(tmp_path, one_thread, config_name, overrides):
    manifest = _run(tmp_path, config_name, *overrides)
    model = manifest["metrics"]["test/ndcg@10"]
    popularity = manifest["baselines"]["popularity"]["test/ndcg@10"]
    assert model > popularity + 0.1, (model, popularity)


def test_target_window_changes_what_pretraining_learns_and_is_reproducible(tmp_path, one_thread):
    def weights(name, *overrides):
        manifest = _run(tmp_path / name, "autoregressive", "train.epochs=1", *overrides)
        return manifest["sha256"]

    next_item = weights("w1")
    assert weights("w1-default", "objective.target_window=1") == next_item  # 1 is the next-item objective
    window = weights("w4", "objective.target_window=4")
    assert window != next_item
    assert weights("w4-again", "objective.target_window=4") == window


def test_manifest_records_the_resolved_softmax_and_precision(tmp_path, one_thread):
    from peterrec.runtime import resolve_precision

    manifest = _run(tmp_path, "autoregressive", "train.precision=auto", "objective.softmax=auto")
    assert manifest["softmax"] == "full"  # the sample's vocabulary is far below EXACT_SOFTMAX_MAX_ITEMS
    assert manifest["precision"] == resolve_precision("auto", torch.device("cpu"))
    assert manifest["precision"] in ("fp32", "bf16")
