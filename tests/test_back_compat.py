"""Runs written by 0.1.0 (tests/fixtures/v0.1.0, made with the last 0.1.0 commit) load, evaluate and
recommend with today's code: weight names, config.yaml and manifest are translated on the way in."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import REPO_ROOT

from peterrec.commands.evaluate import evaluate_run
from peterrec.commands.recommend import recommend_lines
from peterrec.config import FinetuneConfig, load_config
from peterrec.manifest import SCHEMA_VERSION, read_manifest
from peterrec.model.adapters.bottleneck import BlockParallelPatch
from peterrec.runs import PatchSwitcher, load_backbone, load_run

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "v0.1.0"
RUNS = ("backbone", "gender-peterrec", "coldrec-fine_last1", "nextitem-peterrec")
EXPECTED = json.loads((FIXTURES / "expected_outputs.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the fixtures' configs name the sample by its repo-relative path


@pytest.mark.parametrize("run", RUNS)
def test_0_1_0_runs_evaluate_as_they_did(run):
    metrics, expected = evaluate_run(FIXTURES / run, "test"), EXPECTED[run]["evaluate_test"]
    assert set(expected) <= set(metrics)  # every metric 0.1.0 printed is there (later metrics may be added)
    assert {k: metrics[k] for k in expected} == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("run", RUNS)
def test_0_1_0_runs_recommend_as_they_did(run):
    lines = [json.loads(line) for line in recommend_lines(FIXTURES / run, ["u00001", "u00007"], None, 5)]
    expected = [json.loads(line) for line in EXPECTED[run]["recommend"]]
    for got, want in zip(lines, expected, strict=True):
        assert got.keys() == want.keys() and got["user"] == want["user"]
        if "items" in want:
            assert got["items"] == want["items"] and got["scores"] == pytest.approx(want["scores"], abs=2e-5)
        else:
            assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)


def test_0_1_0_manifests_and_configs_are_translated():
    backbone = read_manifest(FIXTURES / "backbone")
    finetuned = read_manifest(FIXTURES / "gender-peterrec")
    raw = json.loads((FIXTURES / "gender-peterrec" / "manifest.json").read_text(encoding="utf-8"))
    assert "schema_version" not in raw and "adapters" not in raw  # written by 0.1.0
    assert backbone.schema_version == finetuned.schema_version == SCHEMA_VERSION
    assert (
        finetuned.task_type == "profile" and finetuned.base.sha256 == backbone.sha256["backbone.safetensors"]
    )
    config_text = (FIXTURES / "nextitem-peterrec" / "config.yaml").read_text(encoding="utf-8")
    assert "insertion: block_parallel" in config_text and "adapter:" not in config_text
    config = load_config(FinetuneConfig, FIXTURES / "nextitem-peterrec" / "config.yaml")
    assert config.adapter.kind == "bottleneck" and config.adapter.options["insertion"] == "block_parallel"


def test_0_1_0_weights_load_under_todays_names():
    base = load_backbone(FIXTURES / "backbone")
    assert base.backbone.item_encoder.embedding.weight.shape[0] == len(base.vocab) + 4
    run = load_run(FIXTURES / "nextitem-peterrec")
    assert all(isinstance(block, BlockParallelPatch) for block in run.model.backbone.blocks)
    run = load_run(FIXTURES / "gender-peterrec")
    assert run.model.cls_embedding is not None  # trained [CLS] restored


def test_0_1_0_patches_switch_on_one_backbone(tmp_path):
    for run in ("backbone", "gender-peterrec", "coldrec-fine_last1"):
        shutil.copytree(FIXTURES / run, tmp_path / run)
    switcher = PatchSwitcher(tmp_path / "backbone")
    gender = switcher.add(tmp_path / "gender-peterrec")
    coldrec = switcher.add(tmp_path / "coldrec-fine_last1")
    alone = load_run(tmp_path / "gender-peterrec")
    seqs = torch.tensor([[0, 0, 5, 9, 17], [4, 6, 8, 10, 12]])
    coldrec_alone = load_run(tmp_path / "coldrec-fine_last1")
    with torch.inference_mode():
        assert torch.equal(switcher.use(coldrec)(seqs), coldrec_alone.model(seqs))
        assert torch.equal(switcher.use(gender)(seqs), alone.model(seqs))
