"""Files on disk: safetensors round trip, atomic writes, hash verification, staged run directories."""

import json

import pytest
import torch

from peterrec.checkpoint import (
    atomic_write_json,
    load_resume_state,
    load_weights,
    prepare_run_dir,
    save_resume_state,
    save_weights,
    sha256_file,
    verify_files,
)
from peterrec.errors import CheckpointError


def test_weights_round_trip_without_pickle(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    save_weights(tmp_path / "w.safetensors", tensors)
    loaded = load_weights(tmp_path / "w.safetensors")
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_weights_are_a_clear_error(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert not list(tmp_path.glob(".*tmp"))


def test_resume_state_loads_with_weights_only(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "step": 3, "rng": torch.get_rng_state()}
    save_resume_state(tmp_path / "last.pt", state)
    loaded = load_resume_state(tmp_path / "last.pt")
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))
    torch.save({"bad": object()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_resume_state(tmp_path / "evil.pt")


def test_manifest_hashes_catch_a_changed_file(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    hashes = {"vocab.json": sha256_file(tmp_path / "vocab.json")}
    verify_files(tmp_path, hashes)
    (tmp_path / "vocab.json").write_text('{"x": 1}')
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        verify_files(tmp_path, hashes)


def test_run_dir_staging_rules(tmp_path):
    run = tmp_path / "run"
    staging = prepare_run_dir(run, resume=False)
    assert staging.name == "run.partial" and not run.exists()
    with pytest.raises(CheckpointError, match="pass --resume"):
        prepare_run_dir(run, resume=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        prepare_run_dir(run, resume=True)
    run.mkdir()
    with pytest.raises(CheckpointError, match="already there"):
        prepare_run_dir(run, resume=False)
