"""Data-loss and failed-run defects: nothing deletes a folder it did not make, resume refuses another
config, a failed run leaves nothing half-made, and a failing compare child says why."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_CONFIG, TINY_OVERRIDES, set_args

import peterrec.commands.finetune as finetune_command
from peterrec.checkpoint import RUN_MARKER, discard_run_dir
from peterrec.commands.compare import child_failure, interrupted_run
from peterrec.commands.embed import embed_users
from peterrec.errors import CheckpointError

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "v0.1.0"
GENDER = REPO_ROOT / "configs" / "finetune" / "sample_gender.yaml"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.fixture
def backbone(tmp_path):
    shutil.copytree(FIXTURES / "backbone", tmp_path / "backbone")
    return tmp_path / "backbone"


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def finetune_args(backbone, out, *extra) -> list:
    sets = set_args(["train.epochs=1", "train.progress=false", "train.device=cpu", "data.max_len=19", *extra])
    return ["finetune", "-c", GENDER, "--backbone", backbone, "--strategy", "peterrec", *sets, "--out", out]


def test_only_own_runs_are_deleted(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="was not made by peterrec"):
        discard_run_dir(foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_compare_resumes_an_interrupted_run_and_never_deletes_a_foreign_folder(tmp_path):
    staging = tmp_path / "peterrec-f1-s0.partial"
    staging.mkdir()
    (staging / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="was not made by peterrec"):
        interrupted_run(staging)
    assert (staging / "notes.txt").read_text() == "mine"
    (staging / RUN_MARKER).write_text("")
    (staging / "last.pt").write_bytes(b"state")
    assert interrupted_run(staging) is True and (staging / "notes.txt").exists()  # resumed, kept
    (staging / "last.pt").unlink()
    assert interrupted_run(staging) is False and not staging.exists()  # ours, nothing to resume
    assert interrupted_run(tmp_path / "absent.partial") is False


def test_compare_child_failure_names_the_real_cause(tmp_path):
    written = tmp_path / "error.txt"
    written.write_text("run: the finetune process failed with KeyError: 'x'")
    assert "KeyError" in child_failure(tmp_path / "run", 1, written)
    killed = child_failure(tmp_path / "run", -9, tmp_path / "none.txt")
    assert "SIGKILL" in killed and "out-of-memory" in killed
    assert "status 3" in child_failure(tmp_path / "run", 3, tmp_path / "none.txt")


def test_finetune_resume_refuses_another_config(backbone, tmp_path, cli, monkeypatch):
    out = tmp_path / "run"

    def killed(manifest, staging, run_dir):
        raise RuntimeError("killed")  # the process dies after training, before the run is moved into place

    with monkeypatch.context() as patch:
        patch.setattr(finetune_command, "finish_run", killed)
        with pytest.raises(RuntimeError, match="killed"):
            cli.invoke_raw(*finetune_args(backbone, out))
    staging = tmp_path / "run.partial"
    saved = (staging / "config.yaml").read_text()
    result = cli(*finetune_args(backbone, out, "train.lr=5e-4"), "--resume")
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "different config" in line
    assert (staging / "config.yaml").read_text() == saved and not out.exists()
    result = cli(*finetune_args(backbone, out), "--resume")
    assert result.exit_code == 0, result.output
    assert out.is_dir() and not staging.exists()


def test_a_run_whose_loss_diverges_leaves_no_folder(tmp_path, cli):
    out = tmp_path / "diverged"
    overrides = [*TINY_OVERRIDES, "train.lr=1e30", "train.clip_norm=null", "train.epochs=1"]
    result = cli("pretrain", "-c", SAMPLE_CONFIG, *set_args(overrides), "--out", out)
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.stderr)
    assert "loss became" in line and "lower train.lr" in line and "was removed" in line
    assert not out.exists() and not (tmp_path / "diverged.partial").exists()


def test_embed_replaces_its_output_atomically(tmp_path, monkeypatch):
    out = tmp_path / "users.npy"
    np.save(out, np.arange(3.0))

    def broken_save(handle, array, **kwargs):
        handle.write(b"\x93NUMPY half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        embed_users(FIXTURES / "backbone", str(REPO_ROOT / "data" / "sample" / "source.csv"), out)
    monkeypatch.undo()
    assert np.load(out).tolist() == [0.0, 1.0, 2.0]
    assert not [p for p in tmp_path.iterdir() if p.name != "users.npy"]  # no temporary file left behind
