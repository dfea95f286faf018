"""Precomputed item vectors on disk: ``.npy`` (never unpickled) with an ids file, or ``.safetensors`` with the
ids in a file or in the metadata key ``item_ids``; read, checked (2-D, finite, one unique id per row) and
written atomically with their metadata. Used by the ``vectors`` featurizer
(:mod:`peterrec.data.item_features`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from peterrec.errors import ConfigError, DataError


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """``save_file`` through a temporary file, so ``path`` is either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_ids(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(
            f"{path}: vector ids file not found; set vector_ids to a text file, one item id a line"
        )
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read vector ids ({exc}); save them as UTF-8 text") from None
    while lines and not lines[-1]:
        lines.pop()
    if "" in lines:
        raise DataError(f"{path}: line {lines.index('') + 1} is blank; every line must hold one item id")
    return lines


def _read_npy(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: holds Python objects, which are not loaded (no pickle); save a float array "
                "with numpy.save"
            ) from None
        raise DataError(f"{path}: cannot read vectors ({exc}); save them with numpy.save") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read vectors ({exc}); save them with numpy.save") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: not a single array; save one items x dimensions array with numpy.save")
    return array


def _read_safetensors(path: str) -> tuple[np.ndarray, list[str] | None]:
    """The tensor ``vectors`` (as float32) and the ids in the metadata key ``item_ids`` (or None)."""
    try:
        with safe_open(path, framework="pt") as f:
            names = list(f.keys())
            if "vectors" not in names:
                found = ", ".join(repr(n) for n in names) or "none"
                raise DataError(
                    f"{path}: no tensor named 'vectors' (found: {found}); name the tensor 'vectors'"
                )
            tensor = f.get_tensor("vectors")
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: cannot read vectors ({exc}); the file is not valid safetensors") from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise DataError(f"{path}: tensor 'vectors' is {tensor.dtype}; store real numbers (e.g. float32)")
    array = tensor.to(torch.float32).numpy()
    if "item_ids" not in metadata:
        return array, None
    try:
        ids = json.loads(metadata["item_ids"])
    except json.JSONDecodeError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        raise DataError(
            f"{path}: metadata 'item_ids' must be a JSON list of strings (the item ids, in row order)"
        )
    return array, ids


def read_item_vectors(path: str, ids_path: str | None) -> tuple[list[str], np.ndarray]:
    """Precomputed vectors (float32) and their item ids, checked: 2-D, finite, one unique id per row."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: vectors file not found; set vectors to a .npy or .safetensors file")
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        if ids_path is None:
            raise ConfigError(
                f"{path}: a .npy file holds no item ids; set vector_ids to a text file with one item id "
                "a line, in row order"
            )
        array, ids = _read_npy(path), None
    elif suffix == ".safetensors":
        array, ids = _read_safetensors(path)
        if ids_path is None and ids is None:
            raise ConfigError(
                f"{path}: no item ids; set vector_ids to a text file with one item id a line, or store them "
                "in the safetensors metadata key 'item_ids' (a JSON list)"
            )
    else:
        raise ConfigError(
            f"{path}: vectors must be a .npy or .safetensors file, not {suffix or 'no suffix'!r}"
        )
    if ids_path is not None:  # an explicit ids file wins over ids in the metadata
        ids = _read_ids(ids_path)
    if array.dtype.kind not in "fiu":
        raise DataError(f"{path}: vectors are {array.dtype}, not numbers; save a float array")
    if array.ndim != 2 or 0 in array.shape:
        raise DataError(
            f"{path}: vectors have shape {tuple(array.shape)}; expected a non-empty 2-D array "
            "(one row per item, one column per dimension)"
        )
    ids_source = ids_path or f"{path} metadata 'item_ids'"
    if len(ids) != array.shape[0]:
        raise DataError(
            f"{path}: {array.shape[0]} vectors but {len(ids)} item ids in {ids_source}; give one id per row"
        )
    if len(set(ids)) != len(ids):
        repeated = [item for item, count in Counter(ids).items() if count > 1]
        examples = ", ".join(repr(item) for item in repeated[:3])
        raise DataError(
            f"{ids_source}: {len(repeated)} item ids appear twice (e.g. {examples}); keep one row each"
        )
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused below
        vectors = np.ascontiguousarray(array, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise DataError(
            f"{path}: {bad.size} vectors hold NaN or infinite values (in float32), e.g. item {ids[bad[0]]!r} "
            f"(row {bad[0]}); fix or drop them"
        )
    return list(ids), vectors


__all__ = ["read_item_vectors", "save_safetensors"]
