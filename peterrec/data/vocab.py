"""Item vocabulary: real items get ids 4.. in descending training frequency (ties: first appearance).

The frequency order is what the log-uniform sampler assumes. Ids 0-3 are the special tokens
``[PAD] [MASK] [CLS] [UNK]``; an unknown item encodes to ``[UNK]`` and is counted in ``unknown_count``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from peterrec.errors import CheckpointError
from peterrec.tokens import NUM_SPECIAL_TOKENS, UNK

FORMAT = "peterrec-vocab/1"
SPECIAL_TOKENS = ("[PAD]", "[MASK]", "[CLS]", "[UNK]")


class Vocabulary:
    """Bidirectional map between item id strings and integer ids (real items start at 4)."""

    def __init__(self, items: Sequence[str], counts: Sequence[int] | np.ndarray) -> None:
        if len(items) != len(counts):
            raise ValueError(f"{len(items)} items but {len(counts)} counts")
        self.items: list[str] = list(items)
        self.counts: np.ndarray = np.asarray(counts, dtype=np.int64)
        self._ids = {item: i + NUM_SPECIAL_TOKENS for i, item in enumerate(self.items)}
        if len(self._ids) != len(self.items):
            raise ValueError("duplicate items in the vocabulary")
        self.unknown_count = 0

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        """Count items over training ``sequences``; items seen fewer than ``min_count`` times map to UNK."""
        counter: Counter[str] = Counter()
        for seq in sequences:
            counter.update(seq)
        # Counter keeps first-insertion order and sorted() is stable, so ties keep first appearance.
        ranked = sorted((kv for kv in counter.items() if kv[1] >= min_count), key=lambda kv: -kv[1])
        return cls([item for item, _ in ranked], [count for _, count in ranked])

    def __len__(self) -> int:
        """Number of real items (the embedding table has ``len(vocab) + 4`` rows)."""
        return len(self.items)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} items)"

    def id_of(self, item: str) -> int:
        """The id of ``item``, or UNK if it is not in the vocabulary (not counted as unknown)."""
        return self._ids.get(item, UNK)

    def encode(self, items: Sequence[str]) -> np.ndarray:
        """Map item strings to int64 ids; unknown items become UNK and are added to ``unknown_count``."""
        ids = np.fromiter((self._ids.get(item, UNK) for item in items), dtype=np.int64, count=len(items))
        self.unknown_count += int(np.count_nonzero(ids == UNK))
        return ids

    def reset_unknown_count(self) -> int:
        """Return the number of unknown items encoded so far and reset the counter to zero."""
        count, self.unknown_count = self.unknown_count, 0
        return count

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to item strings; special ids decode to ``[PAD]``, ``[MASK]``, ``[CLS]``, ``[UNK]``."""
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < len(self) + NUM_SPECIAL_TOKENS:
                raise ValueError(f"id {i} is out of range for a vocabulary of {len(self)} items (+4 special)")
            out.append(SPECIAL_TOKENS[i] if i < NUM_SPECIAL_TOKENS else self.items[i - NUM_SPECIAL_TOKENS])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout ``{"format", "special_tokens", "items", "counts"}``."""
        return {
            "format": FORMAT,
            "special_tokens": list(SPECIAL_TOKENS),
            "items": list(self.items),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "vocabulary") -> Vocabulary:
        """Rebuild from :meth:`to_dict` output; a CheckpointError naming ``source`` if the layout is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(
                f"{source}: not a peterrec vocabulary (format {found!r}, expected {FORMAT!r}); "
                "point at a vocab.json written by peterrec"
            )
        if data.get("special_tokens") != list(SPECIAL_TOKENS):
            raise CheckpointError(
                f"{source}: special tokens {data.get('special_tokens')!r} are not {list(SPECIAL_TOKENS)!r}; "
                "the file was written by an incompatible version"
            )
        items, counts = data.get("items"), data.get("counts")
        valid = (
            isinstance(items, list)
            and isinstance(counts, list)
            and all(isinstance(i, str) for i in items)
            and all(isinstance(c, int) for c in counts)
        )
        if not valid or len(items) != len(counts) or len(set(items)) != len(items):
            raise CheckpointError(
                f"{source}: 'items' and 'counts' must be lists of equal length (unique strings, integers); "
                "the file is corrupted, write it again with peterrec pretrain"
            )
        return cls(items, counts)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (a temp file, then ``os.replace``)."""
        path = os.fspath(path)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`; a CheckpointError if it is missing or malformed."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"{path}: vocabulary not found; point at a run directory written by peterrec pretrain"
            ) from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot read the vocabulary ({exc}); write it again") from exc
        return cls.from_dict(data, source=path)
