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
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def finalize_run_dir(staging: Path, run_dir: Path) -> Path:
    """Rename the completed staging directory into place."""
    os.replace(staging, run_dir)
    return run_dir


def discard_run_dir(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def fit_or_discard(trainer, staging: Path, resume: bool):
    """Run ``trainer.fit``; a user error in a fresh run removes its staging directory again."""
    try:
        return trainer.fit(resume=resume)
    except PeterRecError:
        if not resume:
            discard_run_dir(staging)
        raise


def read_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        hint = " (the run did not finish; use --resume)" if str(run_dir).endswith(PARTIAL_SUFFIX) else ""
        raise CheckpointError(f"{path}: not found; {run_dir} is not a complete peterrec run{hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt manifest ({exc})") from None


def verify_files(run_dir: str | Path, manifest: dict) -> None:
    """Check every file hash recorded in the manifest; refuse a tampered or truncated run."""
    for name, expected in manifest.get("sha256", {}).items():
        path = Path(run_dir) / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path}: sha256 does not match the manifest; the file was changed")
