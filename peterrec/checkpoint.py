"""Files on disk: atomic writes, safetensors weights, manifests with hashes, staged run directories.

A run directory is built under ``<name>.partial`` and renamed into place only when complete, so a
directory without that suffix is always whole. Single files are written to a temporary name and then
``os.replace``d. Weights never go through pickle; the resume state is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from peterrec.errors import CheckpointError, PeterRecError

PARTIAL_SUFFIX = ".partial"
RUN_MARKER = ".peterrec-run"  # written into every run directory this toolkit creates


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text so that readers see either the old file or the whole new one."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save tensors as safetensors (contiguous CPU copies), atomically."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(clean, tmp))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing or corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; is this a complete run directory?")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({exc}); the file is corrupt") from None


def save_resume_state(path: str | Path, state: dict) -> None:
    """The resume state (optimizer, counters, RNG): tensors and plain types only."""
    _atomic(Path(path), lambda tmp: torch.save(state, tmp))


def load_resume_state(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: cannot read resume state ({exc})") from None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def environment_versions() -> dict[str, str]:
    import numpy

    import peterrec

    return {
        "peterrec": peterrec.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def partial_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + PARTIAL_SUFFIX)


def prepare_run_dir(run_dir: str | Path, resume: bool) -> Path:
    """Create (or, with ``resume``, reuse) the staging directory of a run and return it."""
    run_dir = Path(run_dir)
    staging = partial_dir(run_dir)
    if run_dir.exists():
        raise CheckpointError(
            f"{run_dir}: a finished run is already there; choose another --out or delete it"
        )
    if staging.exists() and not resume:
        raise CheckpointError(
            f"{staging}: an interrupted run is there; pass --resume to continue it, or delete it"
        )
    if resume and not (staging / "last.pt").is_file():
        raise CheckpointError(f"{staging}/last.pt: nothing to resume; run without --resume")
    if not resume:
        staging.mkdir(parents=True)
        (staging / RUN_MARKER).write_text("a peterrec run directory\n", encoding="utf-8")
    return staging


def check_resume_config(staging: Path, config_text: str) -> None:
    """Refuse to resume an interrupted run with a config other than the one it was started with."""
    saved = staging / "config.yaml"
    if saved.is_file() and saved.read_text(encoding="utf-8") != config_text:
        raise CheckpointError(
            f"{saved}: the interrupted run used a different config; resume with the same config and "
            "--set values, or start a new run with another --out"
        )


def is_own_run(path: Path) -> bool:
    """Whether ``path`` is a run directory this toolkit created (it holds the run marker)."""
    return (Path(path) / RUN_MARKER).is_file()


def finalize_run_dir(staging: Path, run_dir: Path) -> Path:
    """Rename the completed staging directory into place."""
    os.replace(staging, run_dir)
    return run_dir


def discard_run_dir(staging: Path) -> None:
    """Remove a run directory this toolkit made; anything else is refused, never deleted."""
    if not is_own_run(staging):
        raise CheckpointError(f"{staging}: was not made by peterrec; it is left untouched")
    shutil.rmtree(staging)


def fit_or_discard(trainer, staging: Path, resume: bool, owner: bool = True):
    """Run ``trainer.fit``. A user error in a fresh run removes its staging directory again (it could not be
    continued: resuming replays the same steps); a resumed run keeps its directory as it was. Only the
    ``owner`` (rank 0 of a multi-process run) removes it."""
    try:
        return trainer.fit(resume=resume)
    except PeterRecError as exc:
        if resume:
            raise
        if owner:
            discard_run_dir(staging)
        raise type(exc)(f"{exc} (the unfinished run {staging} was removed)") from None


def atomic_save_npy(path: str | Path, array) -> None:
    """``numpy.save`` through a temporary file, so ``path`` is either the old file or the whole new one."""
    import numpy

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            numpy.save(handle, array, allow_pickle=False)

    _atomic(Path(path), write)


def verify_files(run_dir: str | Path, hashes: dict[str, str]) -> None:
    """Check every file hash a manifest recorded; refuse a tampered or truncated run."""
    for name, expected in hashes.items():
        path = Path(run_dir) / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path}: sha256 does not match the manifest; the file was changed")
