"""Data-parallel pretraining with torchrun (2 processes, gloo on CPU): the same result as one process on
the same global batch, one run folder written by rank 0, and resume after a kill."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SAMPLE_CONFIG, TINY_OVERRIDES, set_args, subprocess_env
from safetensors.torch import load_file

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
OVERRIDES = [*TINY_OVERRIDES, "train.epochs=3", "train.patience=5"]
ARGS = ["pretrain", "-c", str(SAMPLE_CONFIG), *set_args(OVERRIDES)]

# Changing only the thread count of one process moves the epoch-1 loss by ~2e-4 and valid NDCG@10 by
# ~0.01 on this model (float summation order); two processes differ from one by the same kind of noise.
LOSS_RTOL, NDCG_ATOL = 1e-3, 0.03


def torchrun(out: Path, *extra: str) -> list[str]:
    return [
        TORCHRUN,
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "peterrec",
        "-q",
        *ARGS,
        "--out",
        str(out),
        *extra,
    ]


def kill_every_process_of(marker: str) -> None:
    """SIGKILL every process whose command line names ``marker``, as a crash or the OOM killer would."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(entry.name) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def run_to_completion(command: list[str], out: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run torchrun; on a timeout kill the agent and every worker (they would otherwise be orphaned)."""
    try:
        return subprocess.run(
            command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        kill_every_process_of(str(out))
        raise


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not Path(TORCHRUN).exists():
        pytest.skip("torchrun is not installed beside this Python")
    root = tmp_path_factory.mktemp("ddp")
    env = subprocess_env()
    one = subprocess.run(
        [sys.executable, "-m", "peterrec", "-q", *ARGS, "--out", str(root / "one")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert one.returncode == 0, one.stderr
    two = run_to_completion(torchrun(root / "two"), root / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    return root, two


def test_two_processes_match_one_on_the_same_global_batch(runs):
    root, _ = runs
    one, two = history(root / "one"), history(root / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=LOSS_RTOL)
        assert abs(b["valid/ndcg@10"] - a["valid/ndcg@10"]) < NDCG_ATOL


def test_rank_0_alone_writes_one_clean_run(runs):
    root, proc = runs
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("two")) == ["two"]
    names = load_file(str(root / "two" / "backbone.safetensors"))
    assert names.keys() == load_file(str(root / "one" / "backbone.safetensors")).keys()
    assert not any(k.startswith(("module.", "model.")) for k in names)
    assert proc.stdout.count("NextItNet (this run)") == 1  # one summary, from rank 0


def test_killed_two_process_run_resumes(runs):
    """Killed mid-epoch (a resume point every 3 steps), resumed: the same model as the uninterrupted run."""
    root, _ = runs
    out = root / "killed"
    every = ("--set", "train.checkpoint_every=3")  # changes when last.pt is written, not what is trained
    proc = subprocess.Popen(
        torchrun(out, *every),
        env=subprocess_env(),
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = root / "killed.partial"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (staging / "last.pt").is_file():
        time.sleep(0.01)
    kill_every_process_of(str(out))  # the agent and its workers (they may run in sessions of their own)
    proc.wait()
    assert (staging / "last.pt").is_file() and not out.exists(), "the run finished before it could be killed"
    resumed = run_to_completion(torchrun(out, *every, "--resume"), out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = json.loads((out / "manifest.json").read_text())
    reference = json.loads((root / "two" / "manifest.json").read_text())
    assert done["metrics"] == pytest.approx(reference["metrics"], abs=1e-9)


def test_sparse_item_tables_train_data_parallel_with_gloo(runs):
    """Sparse row gradients skip DDP's dense buckets and are averaged over the ranks separately."""
    root, _ = runs
    # In-batch negatives are each rank's own targets, so only shared samples give the single process's loss.
    sampled = ("objective.softmax=sampled", "objective.in_batch_negatives=false")
    sparse = ("--set", "model.sparse_embedding=true", "--set", sampled[0], "--set", sampled[1])
    one = subprocess.run(
        [sys.executable, "-m", "peterrec", "-q", *ARGS, *sparse, "--out", str(root / "sparse-one")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert one.returncode == 0, one.stderr
    two = run_to_completion(torchrun(root / "sparse-two", *sparse), root / "sparse-two")
    assert two.returncode == 0, two.stderr[-3000:]
    for a, b in zip(history(root / "sparse-one"), history(root / "sparse-two"), strict=True):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=LOSS_RTOL)
        assert abs(b["valid/ndcg@10"] - a["valid/ndcg@10"]) < NDCG_ATOL
