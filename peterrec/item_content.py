"""Item content of a run: the featurizer, the frozen feature rows of the vocabulary, and their files.

A backbone pretrained with a content item encoder (``model.item_encoder: text | id+text``) keeps, beside its
weights, the featurizer's state (``item_featurizer.json`` and companions: a TF-IDF vocabulary and idf, or
copied item vectors) and the feature rows of its vocabulary (``item_features.safetensors``, row = item id,
special tokens first). Items added later (the cold-start target items, ``--items`` at use time) are turned
into rows by the same featurizer, so a reloaded run scores exactly as the trained one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from peterrec.checkpoint import load_weights, save_weights
from peterrec.data.item_features import Featurizer, fit_featurizer, load_featurizer
from peterrec.data.readers import read_item_text
from peterrec.errors import CheckpointError, DataError
from peterrec.model.content_encoder import FeatureTable
from peterrec.tokens import NUM_SPECIAL_TOKENS

logger = logging.getLogger(__name__)

FEATURES_FILE = "item_features.safetensors"


def read_texts(text_config, path: str | None = None) -> dict[str, str]:
    """``item -> text`` from ``path`` (default ``model.text.items``) with the configured columns; {} for
    ``vectors`` without an item file (the vectors are looked up by id)."""
    path = path or text_config.items
    if path is None:
        return {}
    return read_item_text(path, item_column=text_config.item_column, text_columns=text_config.columns)


def feature_table(
    featurizer: Featurizer,
    items: list[str],
    texts: dict[str, str],
    *,
    missing: str = "error",
    source: str = "the item file",
    special_rows: int = 0,
) -> FeatureTable:
    """Feature rows of ``items`` (after ``special_rows`` empty rows).

    An item without a row in ``texts`` is an error naming how many and which (``missing: error``) or gets an
    empty row, counted in the log (``missing: empty``). ``vectors`` featurizers look items up by id.
    """
    have = set(featurizer.ids) if featurizer.kind == "vectors" else texts  # vectors: looked up by id
    lacking = [item for item in items if item not in have]
    if lacking and missing == "error":
        examples = ", ".join(repr(item) for item in lacking[:3])
        raise DataError(
            f"{source}: {len(lacking)} of {len(items)} items have no row there (e.g. {examples}); add their "
            "content, or set model.text.missing: empty to give them empty content"
        )
    if lacking:
        logger.warning(
            "%s: %d of %d items have no content; they get empty rows", source, len(lacking), len(items)
        )
    positions = [special_rows + i for i, item in enumerate(items) if item in have]
    known = [item for item in items if item in have]
    matrix = featurizer.transform(known, [texts.get(item, "") for item in known]) if known else None
    return FeatureTable.from_matrix(_place_rows(matrix, positions, special_rows + len(items), featurizer))


def _place_rows(matrix, positions: list[int], total: int, featurizer: Featurizer):
    """``matrix``'s rows at ``positions`` of a ``total``-row matrix (CSR or dense, float32), empty rows
    elsewhere (the special tokens', and items without content)."""
    if not featurizer.sparse:
        rows = np.zeros((total, featurizer.dim), dtype=np.float32)
        if matrix is not None:
            rows[positions] = matrix
        return rows
    if matrix is None:
        return sp.csr_matrix((total, featurizer.dim), dtype=np.float32)
    placement = sp.csr_matrix(
        (np.ones(len(positions), dtype=np.float32), (positions, np.arange(len(positions)))),
        shape=(total, len(positions)),
    )
    return placement @ sp.csr_matrix(matrix, dtype=np.float32)


@dataclass
class ItemContent:
    """A run's featurizer and the feature rows of its vocabulary (row = item id)."""

    featurizer: Featurizer
    features: FeatureTable

    def rows_for(self, items: list[str], texts: dict[str, str], missing: str, source: str) -> FeatureTable:
        """Feature rows of other items (cold-start targets, new items) by the same featurizer."""
        return feature_table(self.featurizer, items, texts, missing=missing, source=source)

    def save(self, run_dir: Path) -> list[str]:
        """Write the featurizer's files and the feature rows; returns the file names."""
        names = self.featurizer.save(run_dir)
        save_weights(run_dir / FEATURES_FILE, self.features.tensors())
        return [*names, FEATURES_FILE]


def build_item_content(text_config, vocab, progress: bool = True) -> ItemContent:
    """Fit the configured featurizer on the text of every item in the item file; the vocabulary's rows."""
    texts = read_texts(text_config)
    featurizer = fit_featurizer(
        text_config.features,
        texts,
        hashing_features=text_config.hashing_features,
        vectors=text_config.vectors,
        vector_ids=text_config.vector_ids,
        progress=progress,
    )
    items = vocab.decode(range(NUM_SPECIAL_TOKENS, len(vocab) + NUM_SPECIAL_TOKENS))
    source = text_config.items or text_config.vectors
    rows = feature_table(
        featurizer, items, texts, missing=text_config.missing, source=source, special_rows=NUM_SPECIAL_TOKENS
    )
    return ItemContent(featurizer, rows)


def load_item_content(run_dir: Path) -> ItemContent:
    """The featurizer and feature rows a run saved (files checked against the manifest by the caller)."""
    featurizer = load_featurizer(run_dir)
    return ItemContent(featurizer, load_feature_table(run_dir / FEATURES_FILE))


def load_feature_table(path: Path) -> FeatureTable:
    """Feature rows saved by :meth:`ItemContent.save` (or a cold-start run); a malformed file is refused."""
    try:
        return FeatureTable(load_weights(path))
    except (ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{path}: not a feature-rows file ({exc})") from None


__all__ = [
    "FEATURES_FILE",
    "ItemContent",
    "build_item_content",
    "feature_table",
    "load_feature_table",
    "load_item_content",
    "read_texts",
]
