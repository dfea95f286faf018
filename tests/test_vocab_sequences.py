"""Vocabulary order, unknowns, JSON round-trip; padding, filtering, splits, leave-last-out, windows."""

import json
import logging

import numpy as np
import pytest

from peterrec import MASK, PAD, UNK
from peterrec.data import (
    Vocabulary,
    filter_min_length,
    leave_last_out,
    left_pad,
    split_users,
    training_windows,
)
from peterrec.errors import CheckpointError, DataError

SEQUENCES = [["b", "a", "c"], ["a", "c", "d"], ["c"]]


def test_vocabulary_orders_by_frequency_then_first_appearance():
    vocab = Vocabulary.build(SEQUENCES)
    assert len(vocab) == 4
    assert vocab.items == ["c", "a", "b", "d"]  # b and d tie; b appeared first
    assert [vocab.id_of(item) for item in vocab.items] == [4, 5, 6, 7]
    np.testing.assert_array_equal(vocab.counts, [3, 2, 1, 1])


def test_min_count_leaves_rare_items_out():
    vocab = Vocabulary.build(SEQUENCES, min_count=2)
    assert vocab.items == ["c", "a"]
    assert "b" not in vocab and vocab.id_of("b") == UNK


def test_encode_counts_unknown_items_until_reset():
    vocab = Vocabulary.build(SEQUENCES)
    ids = vocab.encode(["c", "zzz", "a", "yyy"])
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [4, UNK, 5, UNK])
    assert vocab.unknown_count == 2
    vocab.encode(["nope", "d"])
    assert vocab.reset_unknown_count() == 3
    assert vocab.unknown_count == 0
    assert len(vocab.encode([])) == 0


def test_decode_specials_and_items():
    vocab = Vocabulary.build(SEQUENCES)
    assert vocab.decode([PAD, MASK, 2, UNK, 4, 7]) == ["[PAD]", "[MASK]", "[CLS]", "[UNK]", "c", "d"]
    assert vocab.decode(vocab.encode(["d", "a"])) == ["d", "a"]
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([8])


def test_json_round_trip(tmp_path):
    vocab = Vocabulary.build([["Toy Story (1995)", 'a "b"', "é"], ["é"]])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert not (tmp_path / "vocab.json.tmp").exists()
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {
        "format": "peterrec-vocab/1",
        "special_tokens": ["[PAD]", "[MASK]", "[CLS]", "[UNK]"],
        "items": ["é", "Toy Story (1995)", 'a "b"'],
        "counts": [2, 1, 1],
    }
    loaded = Vocabulary.load(path)
    assert loaded.items == vocab.items
    np.testing.assert_array_equal(loaded.counts, vocab.counts)
    assert Vocabulary.from_dict(vocab.to_dict()).items == vocab.items


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "vocabulary not found"),
        ("{not json", "cannot read the vocabulary"),
        ('{"format": "other/1"}', "not a peterrec vocabulary"),
        ('{"format": "peterrec-vocab/1", "special_tokens": ["[PAD]"]}', "special tokens"),
        (
            '{"format": "peterrec-vocab/1", "special_tokens": ["[PAD]", "[MASK]", "[CLS]", "[UNK]"], '
            '"items": ["a", "b"], "counts": [1]}',
            "must be lists of equal length",
        ),
    ],
)
def test_load_bad_vocabulary_is_checkpoint_error(tmp_path, content, fragment):
    path = tmp_path / "vocab.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CheckpointError, match=fragment) as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)


def test_left_pad_keeps_the_last_items():
    seqs = [np.array([5, 6, 7, 8, 9]), np.array([4]), np.array([], dtype=np.int64), np.array([10, 11, 12])]
    out = left_pad(seqs, 3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[7, 8, 9], [0, 0, 4], [0, 0, 0], [10, 11, 12]])
    np.testing.assert_array_equal(left_pad(seqs[:2], 4, pad=-1), [[6, 7, 8, 9], [-1, -1, -1, 4]])
    assert left_pad([], 3).shape == (0, 3)


def test_left_pad_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(4, 100, size=n) for n in rng.integers(0, 30, size=500)]
    expected = np.zeros((len(seqs), 12), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-12:] if len(seq) else seq
        expected[row, 12 - len(tail) :] = tail
    np.testing.assert_array_equal(left_pad(seqs, 12), expected)


def test_filter_min_length_drops_and_logs(caplog):
    seqs = {"u1": np.arange(5), "u2": np.arange(2), "u3": np.arange(3)}
    with caplog.at_level(logging.WARNING):
        kept = filter_min_length(seqs, 3, "log.csv")
    assert list(kept) == ["u1", "u3"]
    assert "dropped 1 of 3 users" in caplog.text


def test_filter_min_length_none_left_is_data_error():
    message = r"^log\.csv: no user has at least data\.min_length=3 .*lower data\.min_length"
    with pytest.raises(DataError, match=message):
        filter_min_length({"u1": np.arange(2)}, 3, "log.csv")


def test_split_users_is_deterministic_and_order_independent():
    users = [f"u{i}" for i in range(100)]
    train, valid, test = split_users(users, seed=7)
    assert (len(train), len(valid), len(test)) == (80, 10, 10)
    assert sorted(train + valid + test) == sorted(users)
    shuffled = list(np.random.default_rng(1).permutation(users))
    assert split_users(shuffled, seed=7) == (train, valid, test)
    assert split_users(users, seed=8) != (train, valid, test)
    assert split_users(users, (0.5, 0.0, 0.5), seed=7)[1] == []


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.8, 0.1, 0.2), (1.2, -0.1, -0.1)])
def test_split_users_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError, match="summing to 1"):
        split_users(["a", "b"], fractions)


def test_leave_last_out_contents():
    split = leave_last_out({"u1": np.array([4, 5, 6, 7]), "u2": np.array([8, 9, 10])})
    np.testing.assert_array_equal(split.train["u1"], [4, 5])
    np.testing.assert_array_equal(split.train["u2"], [8])
    (user, history, target), _ = split.valid
    assert user == "u1" and target == 6
    np.testing.assert_array_equal(history, [4, 5])
    (user, history, target), (user2, history2, target2) = split.test
    assert (user, target, user2, target2) == ("u1", 7, "u2", 10)
    np.testing.assert_array_equal(history, [4, 5, 6])
    np.testing.assert_array_equal(history2, [8, 9])
    with pytest.raises(ValueError, match="'short' has 2 items"):
        leave_last_out({"short": np.array([4, 5])})


def test_training_windows_example():
    chunks = training_windows([np.arange(10)], window=4)
    assert [c.tolist() for c in chunks] == [[0, 1], [1, 2, 3, 4, 5], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("window", [1, 2, 3, 7, 50])
def test_training_windows_cover_each_target_exactly_once(window):
    rng = np.random.default_rng(window)
    lengths = [0, 1, 2, 3, window, window + 1, window + 2, 2 * window + 1, 37]
    offsets = np.cumsum([0] + lengths)
    seqs = [np.arange(offsets[i], offsets[i] + n) for i, n in enumerate(lengths)]  # all values distinct
    rng.shuffle(seqs)
    chunks = training_windows(seqs, window)
    assert all(2 <= len(c) <= window + 1 for c in chunks)
    targets = np.concatenate([c[1:] for c in chunks])
    expected = np.concatenate([s[1:] for s in seqs])
    assert len(targets) == len(expected)  # no target twice
    assert sorted(targets.tolist()) == sorted(expected.tolist())
    # Every predicted item is preceded by its true predecessor in its chunk.
    for c in chunks:
        np.testing.assert_array_equal(np.diff(c), 1)


def test_training_windows_rejects_bad_window():
    with pytest.raises(ValueError, match="window must be at least 1"):
        training_windows([np.arange(3)], 0)
