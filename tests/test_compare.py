"""`peterrec compare`: the table agrees with the run manifests, runs are reused, fractions and errors."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO_ROOT, SAMPLE_CONFIG, TINY_OVERRIDES, set_args
from sklearn.metrics import roc_auc_score

from peterrec.checkpoint import RUN_MARKER
from peterrec.commands.cli import main
from peterrec.commands.compare import RunRecord, RunSpec, pick_lrs, plot_results
from peterrec.errors import PeterRecError

GENDER = REPO_ROOT / "configs" / "finetune" / "sample_gender.yaml"
FINETUNE_SET = set_args(["train.epochs=2", "data.max_len=20", "train.progress=false", "train.device=cpu"])
STRATEGIES = ("peterrec", "fine_cls")


def invoke(*args):
    return CliRunner().invoke(main, ["-q", *[str(a) for a in args]])


def compare_args(backbone: Path, out: Path, *extra) -> list:
    return ["compare", "-c", GENDER, "--backbone", backbone, *FINETUNE_SET, "--out", out, *extra]


def parse_table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """The first markdown table of ``text`` as (header, rows of {column: cell})."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header = split[0]
    return header, [dict(zip(header, cells, strict=True)) for cells in split[2:]]


def mean_pm_std(cell: str) -> tuple[float, float]:
    match = re.fullmatch(r"(-?[\d.]+) ± ([\d.]+)", cell)
    assert match, f"not a mean ± std cell: {cell!r}"
    return float(match.group(1)), float(match.group(2))


def manifests(out: Path, strategy: str, fraction: str = "1") -> list[dict]:
    dirs = sorted((out / "runs").glob(f"{strategy}-f{fraction}-s*"))
    return [json.loads((d / "manifest.json").read_text()) for d in dirs if d.is_dir()]


@pytest.fixture(scope="module")
def child_env():
    """One intra-op thread here and in the finetune processes: on a shared 2-core box more only thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("MKL_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, child_env) -> Path:
    out = tmp_path_factory.mktemp("compare") / "backbone"
    result = invoke("pretrain", "-c", SAMPLE_CONFIG, *set_args(TINY_OVERRIDES), "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def compared(backbone, tmp_path_factory) -> tuple[Path, str, float]:
    """A 2-strategy x 2-seed compare: (out dir, stdout, seconds)."""
    out = tmp_path_factory.mktemp("compare") / "out"
    started = time.perf_counter()
    result = invoke(*compare_args(backbone, out, "--strategies", ",".join(STRATEGIES), "--seeds", "2"))
    assert result.exit_code == 0, result.output
    return out, result.output, time.perf_counter() - started


def test_table_matches_run_manifests(compared):
    out, stdout, _ = compared
    header, rows = parse_table((out / "results.md").read_text())
    assert parse_table(stdout) == (header, rows)
    baselines = manifests(out, "peterrec")[0]["baselines"]
    assert [r["method"] for r in rows] == [*STRATEGIES, *baselines]
    for row in rows[: len(STRATEGIES)]:
        runs = manifests(out, row["method"])
        assert len(runs) == 2 and {m["seed"] for m in runs} == {0, 1}
        for column in ("test/accuracy", "test/macro_f1", "test/auc"):
            mean, std = mean_pm_std(row[column])
            values = [m["metrics"][column] for m in runs]
            assert mean == pytest.approx(np.mean(values), abs=6e-5)
            assert std == pytest.approx(np.std(values, ddof=1), abs=6e-5)
        assert int(row["trainable params"].replace(",", "")) == runs[0]["parameters"]["trainable"]
        assert int(row["patch bytes"].replace(",", "")) == runs[0]["parameters"]["stored_bytes"]
        assert float(row["peak RSS MB"]) > 50  # a torch process, measured in the run's own process
    for row in rows[len(STRATEGIES) :]:
        assert float(row["test/accuracy"]) == pytest.approx(
            baselines[row["method"]]["test/accuracy"], abs=6e-5
        )
    # The CI is on the main metric (AUC for two classes); its point estimate is the difference of the
    # seed-averaged AUCs, for the baseline rows too.
    ci_column = header[-1]
    assert ci_column.startswith("Δ test/auc vs peterrec")
    assert rows[0][ci_column] == "reference"
    for row in rows[1:]:
        diff, low, high = map(float, re.findall(r"[-+][\d.]+", row[ci_column]))
        if row["method"] in baselines:
            mine = baselines[row["method"]]["test/auc"]
        else:
            mine = np.mean([m["metrics"]["test/auc"] for m in manifests(out, row["method"])])
        gap = mine - np.mean([m["metrics"]["test/auc"] for m in manifests(out, "peterrec")])
        assert diff == pytest.approx(gap, abs=1e-4) and low <= diff <= high
    assert "task profile" in (out / "results.md").read_text() and "seeds [0, 1]" in stdout


def test_csv_and_json_written(compared):
    out, _, _ = compared
    data = json.loads((out / "results.json").read_text())
    by_method = {r["method"]: r for r in data["rows"]}
    trainable = manifests(out, "fine_cls")[0]["parameters"]["trainable"]
    assert by_method["fine_cls"]["trainable"] == trainable
    assert by_method["fine_cls"]["metrics"]["test/accuracy"]["values"] == [
        m["metrics"]["test/accuracy"] for m in manifests(out, "fine_cls")
    ]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,train_fraction,lr,test/accuracy_mean,test/accuracy_std")
    assert len(csv_lines) == 1 + len(data["rows"])


def test_second_invocation_reuses_finished_runs(compared, backbone):
    out, stdout, first_seconds = compared
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/manifest.json")}
    started = time.perf_counter()
    result = invoke(*compare_args(backbone, out, "--strategies", ",".join(STRATEGIES), "--seeds", "2"))
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert parse_table(result.output) == parse_table(stdout)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert seconds < first_seconds / 2, (seconds, first_seconds)


def test_finished_run_from_another_config_is_refused(compared, backbone):
    out, _, _ = compared
    result = invoke(
        *compare_args(backbone, out, "--strategies", "peterrec", "--seeds", "1", "--set", "train.lr=0.5")
    )
    assert result.exit_code == 2
    assert "another config" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_plot_writes_png(compared, backbone, tmp_path):
    pytest.importorskip("matplotlib")
    out, _, _ = compared
    png = tmp_path / "compare.png"
    args = compare_args(backbone, out, "--strategies", ",".join(STRATEGIES), "--seeds", "2", "--plot", png)
    assert invoke(*args).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(PeterRecError, match=r"\.\[plot\]"):
        plot_results([], "test/accuracy", [1.0], tmp_path / "x.png")


def test_train_fractions_give_rows_per_fraction(compared, backbone, tmp_path):
    out, _, _ = compared
    shutil.copytree(out / "runs", tmp_path / "runs")  # fine_cls at fraction 1 is reused; 0.5 runs afresh
    stale = tmp_path / "runs" / "fine_cls-f0.5-s0.partial"  # a run of ours killed before its first epoch
    stale.mkdir()
    (stale / RUN_MARKER).write_text("")
    args = ["--strategies", "fine_cls", "--seeds", "1", "--train-fraction", "0.5,1.0"]
    result = invoke(*compare_args(backbone, tmp_path, *args))
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    _, rows = parse_table(result.output)
    fine = [r for r in rows if r["method"] == "fine_cls"]
    assert [r["train fraction"] for r in fine] == ["0.5", "1"]
    assert sum(r["method"] == "majority" for r in rows) == 2
    half, full = manifests(tmp_path, "fine_cls", "0.5")[0], manifests(tmp_path, "fine_cls", "1")[0]
    assert half["train_fraction"] == 0.5 and half["task"]["train"]["users"] < full["task"]["train"]["users"]
    assert float(fine[0]["test/accuracy"]) == pytest.approx(half["metrics"]["test/accuracy"], abs=6e-5)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--strategies", "peterrec,bogus"], "--strategies"),
        (["--train-fraction", "0,1"], "--train-fraction"),
        (["--train-fraction", "1.5"], "--train-fraction"),
        (["--train-fraction", "half"], "--train-fraction"),
        (["--lr-grid", "1e-3,x"], "--lr-grid"),
        (["--lr-grid", "-1e-3"], "--lr-grid"),
        (["--seeds", "0"], "--seeds"),
        (["--plot", "out.jpg"], "--plot"),
        (["--reference", "nobody"], "--reference"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_bad_inputs_are_one_line_errors(args, option, tmp_path):
    result = invoke(*compare_args(tmp_path / "no-backbone", tmp_path / "out", *args))
    assert result.exit_code == 2, result.output
    assert option in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "runs").exists()


def test_cross_validation_pools_every_user_and_takes_a_baseline_as_reference(backbone, tmp_path):
    out = tmp_path / "cv"
    args = ["--strategies", "fine_cls", "--seeds", "1", "--set", "task.folds=3"]
    args += ["--reference", "bag_of_items_lr", "--jobs", "2"]  # two folds train at once
    result = invoke(*compare_args(backbone, out, *args))
    assert result.exit_code == 0, result.output
    runs = sorted((out / "runs").iterdir())
    assert [r.name for r in runs] == [f"fine_cls-f1-s0-k{k}" for k in range(3)]
    folds = [json.loads((r / "test_per_user.json").read_text()) for r in runs]
    users = [u for fold in folds for u in fold["users"]]
    labelled = (REPO_ROOT / "data" / "sample" / "labels.csv").read_text().splitlines()[1:]
    assert sorted(users) == sorted(line.split(",")[0] for line in labelled)  # each user tested once
    header, rows = parse_table((out / "results.md").read_text())
    by_method = {r["method"]: r for r in rows}
    ci_column = "Δ test/auc vs bag_of_items_lr (95% CI)"
    assert header[-1] == ci_column and by_method["bag_of_items_lr"][ci_column] == "reference"
    # The table's AUCs are those of the pooled predictions, the model's and the baseline's.
    for method, key in (("fine_cls", None), ("bag_of_items_lr", "bag_of_items_lr")):
        parts = [fold if key is None else fold["baselines"][key] for fold in folds]
        labels = [y for part in parts for y in part["labels"]]
        scores = [p[1] for part in parts for p in part["probabilities"]]
        assert float(by_method[method]["test/auc"]) == pytest.approx(roc_auc_score(labels, scores), abs=6e-5)
    diff, low, high = map(float, re.findall(r"[-+][\d.]+", by_method["fine_cls"][ci_column]))
    gap = float(by_method["fine_cls"]["test/auc"]) - float(by_method["bag_of_items_lr"]["test/auc"])
    assert diff == pytest.approx(gap, abs=2e-4) and low <= diff <= high
    assert f"{len(users)} test users over 3 folds" in result.output


def record(strategy: str, lr: float, seed: int, value: float) -> RunRecord:
    manifest = SimpleNamespace(metrics={"valid/accuracy": value})
    return RunRecord(RunSpec(strategy, 1.0, seed, lr), Path("."), manifest, {}, {})


def test_lr_grid_picks_best_mean_validation_over_seeds():
    # 1e-3 has the best single seed but the worse mean; 3e-4 wins on the mean.
    records = [record("peterrec", 1e-3, 0, 0.9), record("peterrec", 1e-3, 1, 0.1)]
    records += [record("peterrec", 3e-4, 0, 0.6), record("peterrec", 3e-4, 1, 0.6)]
    assert pick_lrs(records, "valid/accuracy") == {(1.0, "peterrec"): 3e-4}
    losses = [record(r.spec.strategy, r.spec.lr, r.spec.seed, 0.0) for r in records]
    for loss, r in zip(losses, records, strict=True):
        loss.manifest.metrics = {"valid/loss": r.manifest.metrics["valid/accuracy"]}
    assert pick_lrs(losses, "valid/loss") == {(1.0, "peterrec"): 1e-3}  # loss: lower is better
    with pytest.raises(PeterRecError, match="train.monitor"):
        pick_lrs(records, "valid/auc")


def test_error_in_a_run_process_is_one_line(child_env, tmp_path):
    missing = tmp_path / "no-backbone"
    result = invoke(*compare_args(missing, tmp_path / "out", "--strategies", "fine_cls", "--seeds", "1"))
    assert result.exit_code == 2, result.output
    assert str(missing) in result.stderr and len(result.stderr.strip().splitlines()) == 1
