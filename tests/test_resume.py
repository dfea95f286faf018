"""Resume is bit-exact: a pretraining run SIGKILLed mid-epoch and resumed ends with the same weights.

Also the finished run directory (files, hashes, `peterrec inspect`) and the refusals around resuming.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import SAMPLE_CONFIG, SAMPLE_DATA, TINY_OVERRIDES, peterrec_command, set_args, subprocess_env

from peterrec.checkpoint import load_weights, sha256_file

# Three epochs of ~250 steps (about a second each on one thread), a resume point every 2 steps, no early stop.
RESUME_OVERRIDES = [
    *TINY_OVERRIDES,
    f"data.path={SAMPLE_DATA}",
    "train.epochs=3",
    "train.batch_size=16",
    "train.checkpoint_every=2",
    "train.patience=10",
    "train.seed=3",
]
PRETRAIN_ARGS = ["pretrain", "-c", str(SAMPLE_CONFIG), *set_args(RESUME_OVERRIDES)]
RUN_FILES = (
    "backbone.safetensors",
    "vocab.json",
    "config.yaml",
    "manifest.json",
    "metrics.jsonl",
    "last.pt",
    ".peterrec-run",  # the marker: this toolkit made the folder
)
KILL_EPOCH = 1  # 0-based: kill during the second epoch, after one epoch has been validated and logged


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def saved_state(path: Path) -> dict:
    """The trainer's counters inside a last.pt."""
    return json.loads(torch.load(path, map_location="cpu", weights_only=True)["state"])


def read_manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    """The uninterrupted reference run."""
    out = tmp_path_factory.mktemp("resume") / "A"
    proc = subprocess.run(
        peterrec_command("-q", *PRETRAIN_ARGS, "--out", out),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def kill_mid_epoch(out: Path, log: Path) -> dict:
    """Start a run, SIGKILL it once its last.pt is mid-way through epoch KILL_EPOCH; return that state."""
    last = out.with_name(out.name + ".partial") / "last.pt"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            peterrec_command(*PRETRAIN_ARGS, "--out", out),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
        )
        try:
            deadline = time.monotonic() + 180
            while proc.poll() is None and time.monotonic() < deadline:
                if last.is_file():
                    try:
                        state = saved_state(last)
                    except Exception:  # caught between write and rename on a slow disk: look again
                        state = None
                    if state and state["epoch"] >= KILL_EPOCH and state["step_in_epoch"] > 0:
                        proc.kill()
                        break
                time.sleep(0.02)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode >= 0:
        pytest.fail(
            f"the run ended (exit {proc.returncode}) before it could be killed mid-epoch; make the epochs "
            f"longer (train.batch_size, train.epochs).\n{log.read_text()[-2000:]}"
        )
    return saved_state(last)


def test_killed_run_resumes_bit_identical(run_a, tmp_path, cli):
    out = tmp_path / "B"
    partial = tmp_path / "B.partial"
    started = time.perf_counter()
    state = kill_mid_epoch(out, tmp_path / "B.log")
    killed_after = time.perf_counter() - started

    assert not out.exists()
    assert partial.is_dir()
    assert state["epoch"] >= KILL_EPOCH and state["step_in_epoch"] > 0, state
    assert not state["finished"]
    assert len(state["history"]) == state["epoch"]
    last_bytes = (partial / "last.pt").read_bytes()
    logged_before_kill = (partial / "metrics.jsonl").read_text().splitlines()

    # Starting over on top of the interrupted run is refused, with the fix.
    result = cli(*PRETRAIN_ARGS, "--out", out)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "B.partial" in line and "pass --resume" in line
    # Resuming with another config is refused, and touches nothing.
    result = cli(*PRETRAIN_ARGS, "--set", "train.lr=1e-3", "--out", out, "--resume")
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "different config" in line and "config.yaml" in line
    assert (partial / "last.pt").read_bytes() == last_bytes
    assert not out.exists()

    proc = subprocess.run(
        peterrec_command("-q", *PRETRAIN_ARGS, "--out", out, "--resume"),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_dir() and not partial.exists()

    a_weights, b_weights = (
        load_weights(run_a / "backbone.safetensors"),
        load_weights(out / "backbone.safetensors"),
    )
    assert a_weights.keys() == b_weights.keys()
    for name, tensor in a_weights.items():
        assert torch.equal(tensor, b_weights[name]), f"{name} differs after resume (killed at {state})"
    a_manifest, b_manifest = read_manifest(run_a), read_manifest(out)
    assert a_manifest["metrics"] == b_manifest["metrics"]
    assert a_manifest["sha256"] == b_manifest["sha256"]
    for key in ("best_epoch", "epochs_run", "baselines", "parameters", "data", "seed"):
        assert a_manifest[key] == b_manifest[key], key

    def history(run: Path) -> list[dict]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [
            {k: v for k, v in row.items() if k not in ("train/seconds", "train/tokens_per_s")} for row in rows
        ]

    assert history(run_a) == history(out)
    # The resumed run carried the killed run's epochs over (their timings too) instead of starting over.
    resumed_rows = (out / "metrics.jsonl").read_text().splitlines()
    assert resumed_rows[: len(logged_before_kill)] == logged_before_kill
    print(f"killed after {killed_after:.1f} s at epoch {state['epoch'] + 1}, step {state['step_in_epoch']}")


def test_run_directory_contents(run_a):
    assert sorted(p.name for p in run_a.iterdir()) == sorted(RUN_FILES)
    manifest = read_manifest(run_a)
    assert set(manifest["sha256"]) == {"backbone.safetensors", "vocab.json", "config.yaml"}
    for name, digest in manifest["sha256"].items():
        assert sha256_file(run_a / name) == digest, name
    assert manifest["seed"] == 3
    assert manifest["epochs_run"] == 3
    rows = (run_a / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2, 3]
    state = saved_state(run_a / "last.pt")
    assert state["finished"] and state["epoch"] == 3 and state["step_in_epoch"] == 0
    assert "train:\n" in (run_a / "config.yaml").read_text()
    assert not run_a.with_name("A.partial").exists()


def test_inspect_prints_the_table(run_a, cli):
    result = cli("inspect", run_a)
    assert result.exit_code == 0, result.output
    assert "| NextItNet (this run) |" in result.output
    assert "| popularity |" in result.output and "| markov |" in result.output
    assert "best epoch" in result.output
    result = cli("inspect", run_a, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metrics"] == read_manifest(run_a)["metrics"]


def test_inspect_refuses_a_changed_file(run_a, tmp_path, cli):
    run = tmp_path / "copy"
    shutil.copytree(run_a, run)
    vocab = run / "vocab.json"
    data = bytearray(vocab.read_bytes())
    data[len(data) // 2] ^= 0x01
    vocab.write_bytes(bytes(data))
    result = cli("inspect", run)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "vocab.json: sha256 does not match the manifest" in line
    assert "Traceback" not in result.output


def test_inspect_refuses_a_missing_file(run_a, tmp_path, cli):
    run = tmp_path / "copy"
    shutil.copytree(run_a, run)
    (run / "backbone.safetensors").unlink()
    result = cli("inspect", run)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "backbone.safetensors: listed in the manifest but missing" in line


def test_refuses_to_overwrite_a_finished_run(run_a, cli):
    result = cli(*PRETRAIN_ARGS, "--out", run_a)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "a finished run is already there" in line
    assert read_manifest(run_a)["epochs_run"] == 3


def test_resume_with_nothing_to_resume(tmp_path, cli):
    result = cli(*PRETRAIN_ARGS, "--out", tmp_path / "fresh", "--resume")
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "nothing to resume" in line and "without --resume" in line
    assert not (tmp_path / "fresh.partial").exists()
