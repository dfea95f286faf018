"""`peterrec compare` with several `--backbone`s: labelled rows, a run folder per backbone, references across
backbones, baselines shown once unless they read the backbone."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SAMPLE_CONFIG, TINY_OVERRIDES, set_args
from test_compare import STRATEGIES, child_env, compare_args, invoke, parse_table  # noqa: F401 (a fixture)

from peterrec.commands.compare import backbone_labels, run_identity, saved_config_is
from peterrec.config import FinetuneConfig, dump_config, load_config
from peterrec.errors import PeterRecError
from peterrec.runs import WEIGHTS_FILE

LABELS = ("bb-s0", "bb-s1")  # the backbones' run directory names: pretrained with seeds 0 and 1
CI = "Δ test/auc vs {} (95% CI)"


def several(backbones: list[Path], out: Path, *extra) -> list:
    """compare_args with every backbone: ``--backbone A --backbone B``."""
    args = compare_args(backbones[0], out, "--strategies", ",".join(STRATEGIES), "--seeds", "1", *extra)
    return [*args, *[arg for b in backbones[1:] for arg in ("--backbone", b)]]


def run_manifest(out: Path, label: str, strategy: str) -> dict:
    return json.loads((out / "runs" / label / f"{strategy}-f1-s0" / "manifest.json").read_text())


def per_user_baselines(out: Path, label: str) -> dict:
    path = out / "runs" / label / f"{STRATEGIES[0]}-f1-s0" / "test_per_user.json"
    return json.loads(path.read_text())["baselines"]


def ci_diff(cell: str) -> float:
    diff, low, high = map(float, re.findall(r"[-+][\d.]+", cell))
    assert low <= diff <= high
    return diff


@pytest.fixture(scope="module")
def backbones(tmp_path_factory, request) -> list[Path]:
    request.getfixturevalue("child_env")  # one thread here and in the run processes, as in test_compare
    root = tmp_path_factory.mktemp("backbones")
    paths = []
    for seed, label in enumerate(LABELS):
        out = root / label
        overrides = set_args([*TINY_OVERRIDES, "train.epochs=1", f"train.seed={seed}"])
        result = invoke("pretrain", "-c", SAMPLE_CONFIG, *overrides, "--out", out)
        assert result.exit_code == 0, result.output
        paths.append(out)
    return paths


@pytest.fixture(scope="module")
def compared(backbones, tmp_path_factory) -> tuple[Path, str]:
    """peterrec and fine_cls, one seed, on both backbones; two runs at a time across the backbones."""
    out = tmp_path_factory.mktemp("compare") / "out"
    result = invoke(*several(backbones, out, "--jobs", "2"))
    assert result.exit_code == 0, result.output
    return out, result.output


def test_rows_are_labelled_and_runs_go_to_a_folder_per_backbone(compared, backbones):
    out, stdout = compared
    header, rows = parse_table(stdout)
    assert parse_table((out / "results.md").read_text()) == (header, rows)
    for label, backbone in zip(LABELS, backbones, strict=True):
        assert sorted(p.name for p in (out / "runs" / label).iterdir()) == sorted(
            f"{s}-f1-s0" for s in STRATEGIES
        )
        weights = json.loads((backbone / "manifest.json").read_text())["sha256"][WEIGHTS_FILE]
        for strategy in STRATEGIES:
            manifest = run_manifest(out, label, strategy)
            assert manifest["base"]["sha256"] == weights  # each folder's runs finetuned its own backbone
            row = next(r for r in rows if r["method"] == f"{strategy} [{label}]")
            assert float(row["test/auc"]) == pytest.approx(manifest["metrics"]["test/auc"], abs=6e-5)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(LABELS)

    # Baselines that do not read the backbone come out the same from both folders' runs: one row each; the
    # transfer baselines (a probe on the backbone's user vectors, its item embeddings) differ: a row each.
    first, second = (per_user_baselines(out, label) for label in LABELS)
    per_backbone = [name for name in first if first[name] != second[name]]
    assert per_backbone == ["linear_probe", "mean_item_embedding_lr"]
    expected = [f"{s} [{label}]" for s in STRATEGIES for label in LABELS]
    for name in first:
        expected += [f"{name} [{label}]" for label in LABELS] if name in per_backbone else [name]
    assert [r["method"] for r in rows] == expected
    assert float(next(r for r in rows if r["method"] == "linear_probe [bb-s1]")["test/auc"]) == pytest.approx(
        run_manifest(out, "bb-s1", STRATEGIES[0])["baselines"]["linear_probe"]["test/auc"], abs=6e-5
    )


def test_default_reference_is_peterrec_of_the_first_backbone(compared):
    out, stdout = compared
    header, rows = parse_table(stdout)
    by_method = {r["method"]: r for r in rows}
    column = CI.format("peterrec [bb-s0]")
    assert header[-1] == column and by_method["peterrec [bb-s0]"][column] == "reference"
    # Paired over the same test users: the point estimate is the difference of the two backbones' AUCs.
    auc = {label: run_manifest(out, label, "peterrec")["metrics"]["test/auc"] for label in LABELS}
    assert ci_diff(by_method["peterrec [bb-s1]"][column]) == pytest.approx(
        auc["bb-s1"] - auc["bb-s0"], abs=1e-4
    )


@pytest.mark.parametrize(
    ("reference", "row"),
    [
        ("peterrec [bb-s1]", "peterrec [bb-s1]"),
        ("fine_cls", "fine_cls [bb-s0]"),  # a plain name: the first backbone's row
        ("linear_probe [bb-s1]", "linear_probe [bb-s1]"),
        ("bag_of_items_lr [bb-s1]", "bag_of_items_lr"),  # shown once: the same for both backbones
    ],
)
def test_reference_across_backbones(compared, backbones, reference, row):
    out, stdout = compared
    result = invoke(*several(backbones, out, "--reference", reference))  # every run is reused
    assert result.exit_code == 0, result.output
    header, rows = parse_table(result.output)
    assert [r["method"] for r in rows] == [r["method"] for r in parse_table(stdout)[1]]
    column = CI.format(row)
    assert header[-1] == column
    assert [r["method"] for r in rows if r[column] == "reference"] == [row]
    gap = {r["method"]: float(r["test/auc"]) for r in rows}
    for r in rows:
        if r["method"] != row:
            assert ci_diff(r[column]) == pytest.approx(gap[r["method"]] - gap[row], abs=2e-4)


def test_results_files_and_note_name_the_backbones(compared, backbones):
    out, stdout = compared
    data = json.loads((out / "results.json").read_text())
    assert [(b["label"], b["path"]) for b in data["backbones"]] == list(
        zip(LABELS, map(str, backbones), strict=True)
    )
    labels = {r["method"]: r["backbone"] for r in data["rows"]}
    assert labels["peterrec [bb-s1]"] == "bb-s1" and labels["linear_probe [bb-s0]"] == "bb-s0"
    assert labels["majority"] is None  # shown once, for every backbone
    with open(out / "results.csv", newline="") as handle:
        flat = list(csv.DictReader(handle))
    assert [(r["method"], r["backbone"]) for r in flat][:2] == [
        ("peterrec [bb-s0]", "bb-s0"),
        ("peterrec [bb-s1]", "bb-s1"),
    ]
    for b in data["backbones"]:
        assert f"{b['label']} = {b['path']} (weights sha256 {b['sha256'][:12]})" in stdout


def test_one_backbone_over_the_same_runs_gives_its_rows_unlabelled(compared, backbones, tmp_path):
    out, stdout = compared
    shutil.copytree(out / "runs" / "bb-s0", tmp_path / "runs")  # the layout of a one-backbone compare
    result = invoke(
        *compare_args(backbones[0], tmp_path, "--strategies", ",".join(STRATEGIES), "--seeds", "1")
    )
    assert result.exit_code == 0, result.output
    header, rows = parse_table(result.output)
    assert header[-1] == CI.format("peterrec")
    both = {
        r["method"].removesuffix(" [bb-s0]"): r for r in parse_table(stdout)[1] if "bb-s1" not in r["method"]
    }
    assert [r["method"] for r in rows] == list(both)
    assert all(r["test/auc"] == both[r["method"]]["test/auc"] for r in rows)
    assert all("backbone" not in r for r in json.loads((tmp_path / "results.json").read_text())["rows"])
    assert "weights sha256" not in result.output


def test_plot_labels_lines_by_row(compared, backbones, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    bars = []
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, x, *a, **k: bars.append(x))
    out, stdout = compared
    png = tmp_path / "backbones.png"
    assert invoke(*several(backbones, out, "--plot", png)).exit_code == 0
    assert bars == [f"{s} [{label}]" for s in STRATEGIES for label in LABELS]


def test_same_backbone_twice_is_a_usage_error(backbones, tmp_path):
    twice = tmp_path / "link"
    twice.symlink_to(backbones[0])
    result = invoke(*several([backbones[0], twice], tmp_path / "out"))
    assert result.exit_code == 2
    assert (
        "Usage:" in result.stderr
        and f"--backbone: {twice} is the same directory as {backbones[0]}" in result.stderr
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("second", ["missing", "finetune run"])
def test_a_backbone_that_is_not_a_pretrain_run_fails_before_any_run(compared, backbones, tmp_path, second):
    out, _ = compared
    path = tmp_path / "no-backbone" if second == "missing" else out / "runs" / "bb-s0" / "peterrec-f1-s0"
    result = invoke(*several([backbones[0], path], tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (
        "is not a complete peterrec run" if second == "missing" else "expected a 'backbone' run"
    ) in result.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_unknown_labelled_reference_is_one_line_error(backbones, tmp_path):
    result = invoke(*several(backbones, tmp_path / "out", "--reference", "peterrec [bb-s9]"))
    assert result.exit_code == 2
    assert "--reference" in result.stderr and "bb-s0, bb-s1" in result.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_labels_are_directory_names_made_unique_by_their_parents():
    assert backbone_labels(["ckpt/ar", "ckpt/masked"]) == ["ar", "masked"]
    labels = backbone_labels(["/x/a/backbone", "/y/a/backbone", "/z/b/backbone", "/w/other"])
    assert labels == ["x/a/backbone", "y/a/backbone", "b/backbone", "other"]
    assert backbone_labels(["/a/b", "/x/a/b"]) == ["a/b", "x/a/b"]
    with pytest.raises(PeterRecError, match="same directory"):
        backbone_labels(["ckpt/ar", "ckpt/../ckpt/ar"])


def test_a_run_saved_before_a_key_existed_counts_as_the_same_config(tmp_path):
    config = load_config(FinetuneConfig, REPO_ROOT / "configs" / "finetune" / "sample_coldrec.yaml")
    expected = run_identity(config)
    older = "\n".join(line for line in expected.splitlines() if not line.strip().startswith("items:"))
    assert older != expected  # the key the older run lacks
    (tmp_path / "config.yaml").write_text(older + "\n", encoding="utf-8")
    assert saved_config_is(tmp_path, expected)
    (tmp_path / "config.yaml").write_text(expected.replace("lr: 0.002", "lr: 0.003"), encoding="utf-8")
    assert not saved_config_is(tmp_path, expected)
    (tmp_path / "config.yaml").write_text("task: [not, a, mapping]\n", encoding="utf-8")
    assert not saved_config_is(tmp_path, expected)


def with_lr_table(config: FinetuneConfig, table: dict[str, float]) -> FinetuneConfig:
    return dataclasses.replace(config, strategy=dataclasses.replace(config.strategy, lr=table))


def test_another_strategys_lr_entry_does_not_make_a_run_stale(tmp_path):
    """The per-strategy lr table is resolved into ``train.lr``: only the run's own lr is its identity."""
    config = load_config(FinetuneConfig, REPO_ROOT / "configs" / "finetune" / "sample_coldrec.yaml")
    (tmp_path / "config.yaml").write_text(dump_config(with_lr_table(config, {"fine_all": 3e-3})), "utf-8")
    retuned = with_lr_table(config, {"fine_all": 3e-4})
    assert saved_config_is(tmp_path, run_identity(retuned))
    own_lr = dataclasses.replace(retuned, train=dataclasses.replace(config.train, lr=config.train.lr * 3))
    assert not saved_config_is(tmp_path, run_identity(own_lr))
