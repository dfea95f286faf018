"""The log cache and streaming reader give exactly what the in-memory readers give."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from peterrec.config import DataConfig
from peterrec.data import log_cache
from peterrec.data.log_cache import cache_key, load_or_build, read_sequences, time_ordered_strings
from peterrec.data.next_item import load_next_item_data
from peterrec.data.vocab import Vocabulary
from peterrec.errors import DataError

SAMPLE = "data/sample/source.csv"


def _in_memory(config: DataConfig) -> tuple[dict[str, list[str]], Vocabulary]:
    sequences = log_cache.read_in_memory(config)
    return sequences, Vocabulary.build(sequences.values())


def _assert_same(config: DataConfig, **kwargs) -> log_cache.UserSequences:
    expected, vocab = _in_memory(config)
    got = load_or_build(config, **kwargs)
    assert got.users == list(expected)
    assert time_ordered_strings(got) == expected
    assert got.vocab.items == vocab.items
    np.testing.assert_array_equal(got.vocab.counts, vocab.counts)
    assert got.items.dtype == np.int32 and got.offsets.dtype == np.int64
    return got


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_sample_streams_and_caches_identically(tmp_path):
    config = DataConfig(path=SAMPLE)
    first = _assert_same(config, cache_dir=tmp_path, min_bytes=0)
    assert not first.cached
    second = _assert_same(config, cache_dir=tmp_path, min_bytes=0)
    assert second.cached and isinstance(second.items, np.ndarray)


HAND_WRITTEN = {
    "quoted.csv": (
        'user_id,item_id,timestamp\n"u, 1","item ""a"" (x)",5\nu2,b,1\n"u, 1",b,5\n\n'
        'u2,"c,d",1\n"u, 1",c,2\nu2,b,0\n u3 , a ,3\n',
        {},
    ),
    "equal_times.csv": (
        "user_id,item_id,timestamp\nu1,a,1\nu1,b,1\nu2,b,1\nu1,c,0\nu2,a,1\nu1,a,1\nu2,c,1.0\n",
        {},
    ),
    "no_time.tsv": (
        "user\titem\nx\tp\ny\tq\nx\tq\nx\tp\ny\tr\n",
        {"user_column": "user", "item_column": "item", "time_column": None},
    ),
    "log.inter": (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        'a\t"q"\t1\t3\nb\tx y\t2\t1\na\tx y\t3\t1\nb\t"q"\t1\t0\na\tz\t1\t3\n',
        {},
    ),
    "log.txt": ("user_id;item_id;timestamp\nu1;a;2\nu1;b;1\n", {"separator": ";"}),
    "crlf.csv": ("user_id,item_id,timestamp\r\nu1,a,2\r\nu1,b,1\r\n,,\r\nu2,a,1\r\n", {}),
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_hand_written_files(tmp_path, name):
    text, options = HAND_WRITTEN[name]
    config = DataConfig(path=_write(tmp_path, name, text), **options)
    _assert_same(config, cache_dir=tmp_path / "cache", min_bytes=0)
    _assert_same(config, cache_dir=tmp_path / "cache", min_bytes=0)  # from the cache


def test_streaming_reader_does_not_fall_back_on_normal_files(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the in-memory reader was used")

    monkeypatch.setattr(log_cache, "read_interactions", boom)
    for name in ("quoted.csv", "equal_times.csv", "log.inter", "no_time.tsv"):
        text, options = HAND_WRITTEN[name]
        read_sequences(DataConfig(path=_write(tmp_path, name, text), **options))


@pytest.mark.parametrize(
    "text, message",
    [
        ("user_id,item_id,timestamp\nu1,a,1\nu1,b\n", "line 3: expected 3 fields"),
        ("user_id,item_id,timestamp\nu1,a,x\n", "line 2: timestamp 'x' is not a number"),
        ("user_id,item_id,timestamp\nu1,,1\n", "line 2: empty item id"),
        ("user,item_id,timestamp\nu1,a,1\n", "no column 'user_id'"),
        ("user_id,item_id,timestamp\n", "has a header but no rows"),
        ('user_id,item_id,timestamp\n"u1,a,1\n', "cannot parse"),
        ("user_id,item_id,timestamp\nu1,a,inf\n", "is not a number"),
    ],
)
def test_errors_are_the_readers_messages(tmp_path, text, message):
    config = DataConfig(path=_write(tmp_path, "bad.csv", text))
    with pytest.raises(DataError, match=message):
        load_or_build(config, cache_dir=tmp_path / "cache", min_bytes=0)


def test_not_utf8_is_the_readers_message(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"user_id,item_id,timestamp\nu1,caf\xe9,1\n")
    with pytest.raises(DataError, match="line 2: byte 0xe9 at column 7 is not valid UTF-8"):
        load_or_build(DataConfig(path=str(path)), cache_dir=tmp_path / "cache", min_bytes=0)


def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    config = DataConfig(path=_write(tmp_path, "log.csv", HAND_WRITTEN["equal_times.csv"][0]))
    first = load_or_build(config, cache_dir=tmp_path / "cache", min_bytes=0)

    def boom(*args, **kwargs):
        raise AssertionError("the log was read again")

    monkeypatch.setattr(log_cache, "_stream", boom)
    monkeypatch.setattr(log_cache, "read_interactions", boom)
    second = load_or_build(config, cache_dir=tmp_path / "cache", min_bytes=0)
    assert second.cached and second.users == first.users
    np.testing.assert_array_equal(second.items, first.items)


def test_changed_file_or_options_change_the_key(tmp_path):
    config = DataConfig(path=_write(tmp_path, "log.csv", "user_id,item_id,timestamp\nu1,a,1\n"))
    key = cache_key("abc", config)
    assert cache_key("abd", config) != key
    assert cache_key("abc", DataConfig(path=config.path, time_column=None)) != key
    assert cache_key("abc", DataConfig(path=config.path, separator=";")) != key
    assert cache_key("abc", DataConfig(path=config.path, min_length=5)) == key  # applied after reading
    load_or_build(config, cache_dir=tmp_path / "cache", min_bytes=0)
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu1,a,1\nu1,b,2\n", encoding="utf-8")
    again = load_or_build(config, cache_dir=tmp_path / "cache", min_bytes=0)
    assert not again.cached and time_ordered_strings(again) == {"u1": ["a", "b"]}
    assert len(os.listdir(tmp_path / "cache")) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage_meta", "wrong_ids"])
def test_corrupt_cache_is_rebuilt(tmp_path, caplog, damage):
    config = DataConfig(path=_write(tmp_path, "log.csv", HAND_WRITTEN["quoted.csv"][0]))
    load_or_build(config, cache_dir=tmp_path / "cache", min_bytes=0)
    (folder,) = (tmp_path / "cache").iterdir()
    if damage == "truncate":
        data = (folder / "items.npy").read_bytes()
        (folder / "items.npy").write_bytes(data[: len(data) - 4])
    elif damage == "garbage_meta":
        (folder / "meta.json").write_text("{not json", encoding="utf-8")
    else:
        np.save(folder / "items.npy", np.full(len(np.load(folder / "items.npy")), 10**6, dtype=np.int32))
    with caplog.at_level(logging.WARNING):
        _assert_same(config, cache_dir=tmp_path / "cache", min_bytes=0)
    assert "rebuilding" in caplog.text
    assert _assert_same(config, cache_dir=tmp_path / "cache", min_bytes=0).cached


def test_cache_off_and_small_files(tmp_path, monkeypatch):
    config = DataConfig(path=_write(tmp_path, "log.csv", HAND_WRITTEN["quoted.csv"][0]))
    monkeypatch.setenv("PETERREC_CACHE", "off")
    load_or_build(config, min_bytes=0)
    monkeypatch.setenv("PETERREC_CACHE", str(tmp_path / "elsewhere"))
    load_or_build(config)  # below the size limit: not cached
    assert not (tmp_path / "elsewhere").exists() or not any((tmp_path / "elsewhere").iterdir())
    load_or_build(config, min_bytes=0)
    assert len(list((tmp_path / "elsewhere").iterdir())) == 1
    assert not (tmp_path / ".peterrec-cache").exists()


def test_next_item_data_from_the_cache_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(log_cache, "MIN_CACHE_BYTES", 0)
    monkeypatch.setenv("PETERREC_CACHE", str(tmp_path))
    text = "user_id,item_id,timestamp\n" + "".join(
        f"u{u},i{(u * 7 + k * 3) % 11},{k}\n" for u in range(8) for k in range(2 + u % 4)
    )
    config = DataConfig(path=_write(tmp_path, "log.csv", text), min_length=4)
    data = load_next_item_data(config)  # users with fewer than 4 clicks dropped: vocabulary rebuilt
    cached = load_next_item_data(config)
    sequences, _ = _in_memory(config)
    kept = {u: s for u, s in sequences.items() if len(s) >= 4}
    vocab = Vocabulary.build(kept.values())
    for got in (data, cached):
        assert got.users == list(kept) and got.vocab.items == vocab.items
        for u, user in enumerate(got.users):
            ids = vocab.encode(kept[user])
            np.testing.assert_array_equal(got.train[u], ids[:-2])
            np.testing.assert_array_equal(got.valid_histories[u], ids[:-2])
            np.testing.assert_array_equal(got.test_histories[u], ids[:-1])
            assert got.valid_targets[u] == ids[-2] and got.test_targets[u] == ids[-1]
    pretrained = Vocabulary(["i1", "i2"], [5, 4])
    other = load_next_item_data(config, vocab=pretrained)
    assert pretrained.unknown_count == sum(len(s) for s in kept.values()) - sum(
        s.count("i1") + s.count("i2") for s in kept.values()
    )
    assert other.vocab is pretrained
