"""Shared fixtures: the sample config, tiny-model overrides and ways to run the `peterrec` command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from peterrec.commands.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = REPO_ROOT / "configs" / "pretrain" / "sample_autoregressive.yaml"
SAMPLE_DATA = REPO_ROOT / "data" / "sample" / "source.csv"

# A model small enough that an epoch on the 2,000-user sample takes about a second on one CPU thread.
TINY_OVERRIDES = (
    "model.channels=16",
    "model.dilations=[1,2]",
    "data.max_len=16",
    "train.epochs=2",
    "train.progress=false",
    "train.device=cpu",
)


def set_args(overrides) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [arg for text in overrides for arg in ("--set", text)]


@pytest.fixture
def sample_config() -> Path:
    return SAMPLE_CONFIG


@pytest.fixture
def sample_data() -> Path:
    return SAMPLE_DATA


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY_OVERRIDES)


@pytest.fixture
def one_thread():
    """Torch on one thread while the test runs: on a small shared machine more threads only thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli():
    """Run ``peterrec ARGS`` in-process; returns click's Result (``.stderr`` holds the error line)."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, [str(a) for a in args])

    def invoke_raw(*args: str) -> Result:
        """Let exceptions (e.g. a simulated kill) propagate instead of turning them into a Result."""
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    invoke.invoke_raw = invoke_raw
    return invoke


def subprocess_env() -> dict[str, str]:
    """The environment for a real `peterrec` process.

    One intra-op thread: the same for every run a test compares (resume is bit-exact only on the same
    thread count), and on a 2-core machine shared with other jobs far faster than torch's default.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONWARNINGS", None)
    return env


def peterrec_command(*args: str) -> list[str]:
    """The command line of the installed `peterrec` executable (or the module, if not on PATH)."""
    executable = Path(sys.executable).with_name("peterrec")
    prefix = [str(executable)] if executable.exists() else [sys.executable, "-m", "peterrec"]
    return prefix + [str(a) for a in args]


@pytest.fixture
def run_peterrec():
    """Run the real `peterrec` executable to completion; returns the CompletedProcess (text mode)."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            peterrec_command(*args),
            capture_output=True,
            text=True,
            env=subprocess_env(),
            cwd=REPO_ROOT,
            timeout=timeout,
        )

    return run
