"""Finetuning end to end on the generated sample: transfer gap, evaluate from weights, refusal of a
foreign backbone, patch switching, nextitem, coldrec protocols, the original line format, recommend/embed."""

import json
import logging

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from peterrec.commands.finetune import run_finetune
from peterrec.commands.pretrain import run_pretrain
from peterrec.config import FinetuneConfig, PretrainConfig, load_config
from peterrec.errors import CheckpointError
from peterrec.runs import PatchSwitcher, load_run
from peterrec.tasks import build_task

FINETUNE = REPO_ROOT / "configs" / "finetune"
PRETRAIN = REPO_ROOT / "configs" / "pretrain" / "sample_autoregressive.yaml"
SOURCE = REPO_ROOT / "data" / "sample" / "source.csv"
QUIET = ["train.progress=false"]


def _finetune_config(name: str, *overrides: str) -> FinetuneConfig:
    paths = [f"data.path={SOURCE}"]
    if name in ("gender", "age"):
        paths.append(f"task.labels={REPO_ROOT / 'data' / 'sample' / 'labels.csv'}")
    if name == "coldrec":
        paths.append(f"task.target={REPO_ROOT / 'data' / 'sample' / 'target.csv'}")
    return load_config(FinetuneConfig, FINETUNE / f"sample_{name}.yaml", [*QUIET, *paths, *overrides])


def _pretrain(out, *overrides: str):
    logging.disable(logging.INFO)
    config = load_config(PretrainConfig, PRETRAIN, [*QUIET, f"data.path={SOURCE}", *overrides])
    return run_pretrain(config, out=out)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """The sample's demo backbone (about 10 s on 2 cores)."""
    return _pretrain(tmp_path_factory.mktemp("bb") / "backbone")


@pytest.fixture(scope="module")
def other_backbone(tmp_path_factory):
    """Same architecture, another seed and one epoch: a different sha256."""
    return _pretrain(tmp_path_factory.mktemp("bb2") / "backbone", "train.seed=7", "train.epochs=1")


@pytest.fixture(scope="module")
def gender_run(backbone, tmp_path_factory):
    return run_finetune(_finetune_config("gender"), backbone, out=tmp_path_factory.mktemp("g") / "run")


def _accuracy(run_dir) -> float:
    return json.loads((run_dir / "manifest.json").read_text())["metrics"]["test/accuracy"]


def test_pretraining_carries_the_transfer(backbone, tmp_path):
    """With labels for few users, peterrec beats peter_zero and scratch by >= 5 points (3 seeds)."""
    means = {}
    for strategy in ("peterrec", "peter_zero", "scratch"):
        runs = [
            run_finetune(
                _finetune_config("gender"),
                backbone,
                strategy=strategy,
                seed=s,
                out=tmp_path / f"{strategy}{s}",
            )
            for s in range(3)
        ]
        means[strategy] = float(np.mean([_accuracy(r) for r in runs]))
    assert means["peterrec"] >= means["peter_zero"] + 0.05, means
    assert means["peterrec"] >= means["scratch"] + 0.05, means


def test_evaluate_recomputes_metrics_from_weights(gender_run, cli):
    manifest_path = gender_run / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    stored = {k: v for k, v in manifest["metrics"].items() if k.startswith("test/")}
    manifest["metrics"] = {}
    manifest["baselines"] = {}
    manifest_path.write_text(json.dumps(manifest))
    result = cli("evaluate", str(gender_run), "--split", "test")
    assert result.exit_code == 0, result.output
    recomputed = json.loads(result.stdout)
    assert recomputed.keys() == stored.keys()
    for key, value in stored.items():
        assert recomputed[key] == pytest.approx(value, abs=1e-6), key


def test_patch_file_holds_only_trained_tensors(gender_run):
    from peterrec.checkpoint import load_weights

    tensors = load_weights(gender_run / "patch.safetensors")
    manifest = json.loads((gender_run / "manifest.json").read_text())
    assert sum(t.numel() for t in tensors.values()) == manifest["parameters"]["trainable"]
    assert all(".branch." in k or ".ln2." in k or k.startswith("head.") for k in tensors)


def test_a_patch_on_another_backbone_is_refused(gender_run, other_backbone, cli):
    with pytest.raises(CheckpointError, match="was finetuned on backbone sha256"):
        load_run(gender_run, backbone=other_backbone)
    result = cli("evaluate", str(gender_run), "--backbone", str(other_backbone))
    assert result.exit_code == 2 and "was finetuned on backbone sha256" in result.stderr


def test_switching_task_patches_on_one_backbone(backbone, gender_run, tmp_path):
    age_run = run_finetune(_finetune_config("age"), backbone, out=tmp_path / "age")
    inputs = torch.as_tensor(
        build_task(_finetune_config("gender"), load_run(gender_run).base).splits["test"].inputs
    )
    with torch.no_grad():
        alone = {
            name: load_run(run).model(inputs) for name, run in (("gender", gender_run), ("age", age_run))
        }
    switcher = PatchSwitcher(backbone)
    switcher.add(gender_run, "gender")
    switcher.add(age_run, "age")
    with torch.no_grad():
        for name in ("gender", "age", "gender", "age"):
            shared = switcher.use(name)(inputs)
            assert shared.shape == alone[name].shape
            assert torch.allclose(shared, alone[name], atol=1e-6), name
    assert alone["gender"].shape[1] == 2 and alone["age"].shape[1] == 5


def test_nextitem_finetuning(backbone, tmp_path, cli):
    run = run_finetune(_finetune_config("nextitem", "train.epochs=2"), backbone, out=tmp_path / "next")
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["test/ndcg@10"] > manifest["baselines"]["popularity"]["test/ndcg@10"] + 0.1
    result = cli("evaluate", str(run))
    assert json.loads(result.stdout)["test/ndcg@10"] == pytest.approx(metrics["test/ndcg@10"], abs=1e-6)


@pytest.mark.parametrize("loss, protocol", [("softmax", "full"), ("bce1", "sampled-99")])
def test_coldrec_protocols_are_labelled(backbone, tmp_path, loss, protocol):
    config = _finetune_config("coldrec", f"task.loss={loss}", f"task.eval={protocol}", "train.epochs=3")
    run = run_finetune(config, backbone, out=tmp_path / "cold")
    manifest = json.loads((run / "manifest.json").read_text())
    prefix = "test/" if protocol == "full" else "test/sampled99_"
    assert f"{prefix}ndcg@10" in manifest["metrics"]
    assert not any(k.startswith("test/sampled99_") for k in manifest["metrics"]) or protocol != "full"
    model = manifest["metrics"][f"{prefix}hr@10"]
    popularity = manifest["baselines"]["popularity"][f"{prefix}hr@10"]
    assert model > popularity, (model, popularity)
    assert manifest["task"]["target_items"] == 100


def _write_lines(path, users=600):
    """The sample as original PeterRec lines: 'src1,...,srcN,,tgt1,...'."""
    from peterrec.data import group_sequences, read_interactions

    sources = group_sequences(read_interactions(SOURCE))
    targets = group_sequences(read_interactions(REPO_ROOT / "data" / "sample" / "target.csv"))
    rows = []
    for user in list(targets)[:users]:
        src = [s.replace(",", " ").replace('"', "") for s in sources[user]]
        rows.append(",".join(src) + ",," + ",".join(targets[user]))
    path.write_text("\n".join(rows) + "\n")


def test_original_line_format_pretrain_and_coldrec(tmp_path):
    lines = tmp_path / "peterrec_lines.txt"
    _write_lines(lines)
    backbone = _pretrain(
        tmp_path / "bb",
        f"data.path={lines}",
        "data.format=peterrec_lines",
        "train.epochs=2",
        "model.channels=32",
    )
    assert json.loads((backbone / "manifest.json").read_text())["data"]["users"] == 600
    config = _finetune_config("coldrec", f"data.path={lines}", "data.format=peterrec_lines", "train.epochs=2")
    config.task.target = None
    run = run_finetune(config, backbone, out=tmp_path / "cold")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["task"]["train"]["users"] == 480


def test_recommend_and_embed(backbone, gender_run, tmp_path, cli):
    result = cli("recommend", str(backbone), "--user", "u00001", "-k", "5")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["user"] == "u00001" and len(row["items"]) == 5
    assert row["scores"] == sorted(row["scores"], reverse=True)
    result = cli("recommend", str(gender_run), "--user", "u00001")
    probs = json.loads(result.stdout)["probabilities"]
    assert set(probs) == {"F", "M"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    result = cli("embed", str(gender_run), "--input", str(SOURCE), "--out", str(tmp_path / "u.npy"))
    assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "u.npy")
    assert vectors.shape == (2000, 64) and np.isfinite(vectors).all()
    result = cli("recommend", str(backbone), "--user", "nobody")
    assert result.exit_code == 2 and "no clicks for user 'nobody'" in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_finetune(backbone, tmp_path):
    config = _finetune_config("gender", "train.device=cuda", "train.epochs=2", "train.precision=bf16")
    run = run_finetune(config, backbone, out=tmp_path / "cuda")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["device"].startswith("cuda")
    assert manifest["peak_memory_bytes"] > 0
