"""Readers: quoting, stable time order, RecBole headers, PeterRec lines; one test per malformed input."""

import csv
import logging

import numpy as np
import pytest

from peterrec.data import (
    check_users_have_sequences,
    group_sequences,
    read_interactions,
    read_item_text,
    read_labels,
    read_peterrec_lines,
)
from peterrec.errors import DataError

TRICKY_IDS = ["a,b", 'say "hi"', "Toy Story (1995)", 'x, (y) "z"', "plain"]


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("name, delimiter", [("log.csv", ","), ("log.tsv", "\t")])
def test_quoted_ids_round_trip(tmp_path, name, delimiter):
    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for t, item in enumerate(TRICKY_IDS):
            writer.writerow([f"user {item}", item, t])
    inter = read_interactions(path)
    assert inter.items == TRICKY_IDS
    assert inter.users == [f"user {item}" for item in TRICKY_IDS]
    assert inter.timestamps.dtype == np.float64
    assert inter.lines == [2, 3, 4, 5, 6]


def test_surrounding_whitespace_is_stripped_inner_kept(tmp_path):
    path = write(tmp_path, "log.csv", "user_id , item_id\n  u 1 ,  Heat (1995)  \n")
    inter = read_interactions(path, time_column=None)
    assert inter.users == ["u 1"] and inter.items == ["Heat (1995)"]


def test_stable_sort_keeps_file_order_for_equal_timestamps(tmp_path):
    rows = ["user_id,item_id,timestamp", "u2,z,5", "u1,c,7", "u1,a,3", "u1,b,7", "u2,y,5", "u1,d,7"]
    inter = read_interactions(write(tmp_path, "log.csv", "\n".join(rows) + "\n"))
    sequences = group_sequences(inter)
    assert list(sequences) == ["u2", "u1"]  # first appearance
    assert sequences["u1"] == ["a", "c", "b", "d"]
    assert sequences["u2"] == ["z", "y"]


def test_stable_sort_on_a_long_log_with_many_ties(tmp_path):
    # Long enough that an unstable sort (numpy's introsort) would reorder the ties.
    rng = np.random.default_rng(0)
    stamps = rng.integers(0, 3, size=300)
    rows = ["user_id,item_id,timestamp"] + [f"u1,i{n},{t}" for n, t in enumerate(stamps)]
    sequence = group_sequences(read_interactions(write(tmp_path, "log.csv", "\n".join(rows))))["u1"]
    expected = [f"i{n}" for t in range(3) for n in range(len(stamps)) if stamps[n] == t]
    assert sequence == expected


def test_no_time_column_keeps_file_order(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,item_id,timestamp\nu1,b,9\nu1,a,1\n")
    inter = read_interactions(path, time_column=None)
    assert inter.timestamps is None
    assert group_sequences(inter) == {"u1": ["b", "a"]}


def test_blank_lines_are_skipped_and_lines_are_editor_lines(tmp_path):
    path = write(tmp_path, "log.csv", 'user_id,item_id\n\nu1,"multi\nline"\nu1,b\n')
    inter = read_interactions(path, time_column=None)
    assert inter.items == ["multi\nline", "b"]
    assert inter.lines == [3, 5]


def test_separator_and_column_names(tmp_path):
    path = write(tmp_path, "log.csv", "who;what;when\nu1;i1;2\nu1;i2;1\n")
    inter = read_interactions(path, separator=";", user_column="who", item_column="what", time_column="when")
    assert group_sequences(inter) == {"u1": ["i2", "i1"]}


def test_txt_with_tabs_is_tsv(tmp_path):
    path = write(tmp_path, "log.txt", "user_id\titem_id\nu1\ta,b\n")
    assert read_interactions(path, time_column=None).items == ["a,b"]


def test_recbole_typed_headers(tmp_path):
    text = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        '196\t"242\t3\t881250949\n'
        "196\t302\t3\t881250940\n"
    )
    inter = read_interactions(write(tmp_path, "ml.inter", text))
    assert group_sequences(inter) == {"196": ["302", '"242']}  # quotes are literal in RecBole files
    np.testing.assert_array_equal(inter.timestamps, [881250949.0, 881250940.0])


def test_recbole_user_labels_and_item_text(tmp_path):
    users = write(tmp_path, "ml.user", "user_id:token\tage:float\tgender:token\n1\t24\tM\n2\t53\tF\n")
    assert read_labels(users, label_column="gender") == {"1": "M", "2": "F"}
    assert read_labels(users, label_column="age") == {"1": "24", "2": "53"}
    items = write(
        tmp_path,
        "ml.item",
        "item_id:token\tmovie_title:token_seq\tgenre:token_seq\n1\tToy Story\tAnimation Comedy\n2\tHeat\t\n",
    )
    texts = read_item_text(items, text_columns=["movie_title", "genre"])
    assert texts == {"1": "Toy Story Animation Comedy", "2": "Heat"}


def test_csv_labels(tmp_path):
    path = write(tmp_path, "labels.csv", "user_id,gender\nu1,M\nu2,F\nu1,M\n")
    assert read_labels(path, label_column="gender") == {"u1": "M", "u2": "F"}


def test_peterrec_lines_with_and_without_target(tmp_path):
    path = write(tmp_path, "cold.csv", "1,2,3\n4,5,,9\n6,,7,8,\n\n")
    assert read_peterrec_lines(path) == [
        (["1", "2", "3"], []),
        (["4", "5"], ["9"]),
        (["6"], ["7", "8"]),
    ]


def test_users_without_sequence_are_counted_and_logged(caplog):
    labels = {"u1": "M", "u2": "F", "ghost1": "M", "ghost2": "F"}
    with caplog.at_level(logging.WARNING):
        kept, skipped = check_users_have_sequences(labels, {"u1": [4], "u2": [5]}, "labels.csv")
    assert kept == {"u1": "M", "u2": "F"} and skipped == 2
    assert "skipped 2" in caplog.text and "'ghost1'" in caplog.text and "labels.csv" in caplog.text


def test_no_labelled_user_has_sequence():
    with pytest.raises(DataError, match=r"labels\.csv: none of the 2 labelled users .*same user ids"):
        check_users_have_sequences({"a": "M", "b": "F"}, {"c": [4]}, "labels.csv")


LOG = "log.csv"
# (case id, file name, content or None for a missing file, how to read it, fragments the message must contain)
MALFORMED = [
    ("missing file", LOG, None, "inter", ["log.csv: file not found", "check the path"]),
    ("empty file", LOG, "", "inter", ["log.csv: file is empty", "first line must name the columns"]),
    ("only whitespace", LOG, "\n  \n", "inter", ["log.csv: file is empty"]),
    ("header only", LOG, "user_id,item_id,timestamp\n", "inter", ["log.csv: has a header but no rows"]),
    (
        "missing user column",
        LOG,
        "user,item_id,timestamp\nu1,i1,1\n",
        "inter",
        ["log.csv: no column 'user_id' (found: 'user', 'item_id', 'timestamp')", "set data.user_column"],
    ),
    (
        "missing item column",
        LOG,
        "user_id,movie,timestamp\nu1,i1,1\n",
        "inter",
        ["log.csv: no column 'item_id' (found: 'user_id', 'movie', 'timestamp')", "set data.item_column"],
    ),
    (
        "missing time column",
        LOG,
        "user_id,item_id\nu1,i1\n",
        "inter",
        ["log.csv: no column 'timestamp'", "data.time_column: null"],
    ),
    (
        "wrong field count",
        LOG,
        "user_id,item_id,timestamp\nu1,i1,1\nu1,a,b,2\n",
        "inter",
        ["log.csv line 3: expected 3 fields", "found 4", "double quotes"],
    ),
    (
        "bad quoting",
        LOG,
        'user_id,item_id,timestamp\nu1,"i1"x,1\n',
        "inter",
        ["log.csv line 2: cannot parse", "check the quoting"],
    ),
    (
        "empty user id",
        LOG,
        "user_id,item_id,timestamp\nu1,i1,1\n ,i2,2\n",
        "inter",
        ["log.csv line 3: empty user id (user_id)", "fill it in or delete the line"],
    ),
    (
        "empty item id",
        LOG,
        "user_id,item_id,timestamp\nu1,,1\n",
        "inter",
        ["log.csv line 2: empty item id (item_id)", "fill it in or delete the line"],
    ),
    (
        "non-numeric timestamp",
        LOG,
        "user_id,item_id,timestamp\nu1,i1,1\nu1,i2,abc\n",
        "inter",
        ["log.csv line 3: timestamp 'abc' is not a number; fix the value, or set data.time_column: null"],
    ),
    (
        "non-finite timestamp",
        LOG,
        "user_id,item_id,timestamp\nu1,i1,nan\n",
        "inter",
        ["log.csv line 2: timestamp 'nan' is not a number"],
    ),
    (
        "not utf-8",
        LOG,
        b"user_id,item_id,timestamp\nu1,i1,1\nu1,Am\xe9lie,2\n",
        "inter",
        ["log.csv line 3: byte 0xe9 at column 6 is not valid UTF-8", "re-save the file as UTF-8"],
    ),
    (
        "unknown extension",
        "log.dat",
        "user_id,item_id\nu1,i1\n",
        "inter",
        ["log.dat: cannot tell the format", "set data.format"],
    ),
    (
        "recbole field without type",
        "ml.inter",
        "user_id:token\titem_id\nu1\ti1\n",
        "inter",
        ["ml.inter line 1: header field 'item_id' has no ':type'", "e.g. user_id:token"],
    ),
    (
        "recbole unknown type",
        "ml.inter",
        "user_id:token\titem_id:int\nu1\ti1\n",
        "inter",
        ["ml.inter line 1: header field 'item_id:int' has unknown type 'int'", "use one of token"],
    ),
    (
        "label column missing",
        "labels.csv",
        "user_id,gender\nu1,M\nu2,F\n",
        "labels",
        ["labels.csv: no column 'age' (found: 'user_id', 'gender')", "set label_column to one of them"],
    ),
    (
        "label with one class",
        "labels.csv",
        "user_id,age\nu1,M\nu2,M\n",
        "labels",
        ["labels.csv: label column 'age' has only one class 'M'; a classifier needs at least two"],
    ),
    (
        "empty label",
        "labels.csv",
        "user_id,age\nu1,M\nu2,\n",
        "labels",
        ["labels.csv line 3: empty label (age)", "fill it in or delete the line"],
    ),
    (
        "conflicting labels",
        "labels.csv",
        "user_id,age\nu1,M\nu2,F\nu1,F\n",
        "labels",
        ["labels.csv line 4: user 'u1' already appeared on line 2", "keep one row per user"],
    ),
    (
        "item text column missing",
        "items.csv",
        "item_id,title\n1,Heat\n",
        "text",
        ["items.csv: no column 'genre' (found: 'item_id', 'title')", "set text_columns"],
    ),
    (
        "peterrec line with no items",
        "cold.csv",
        "1,2\n\n3,4\n",
        "lines",
        ["cold.csv line 2: no source items", "or delete the line"],
    ),
    (
        "peterrec line with empty source",
        "cold.csv",
        "1,2\n,,3\n",
        "lines",
        ["cold.csv line 2: no source items", "'src1,...,,tgt1,...'"],
    ),
    (
        "peterrec two separators",
        "cold.csv",
        "1,2,,3,,4\n",
        "lines",
        ["cold.csv line 1: more than one empty field", "only one empty field may separate"],
    ),
    ("peterrec empty file", "cold.csv", "\n", "lines", ["cold.csv: file is empty", "one sequence per line"]),
]

READERS = {
    "inter": read_interactions,
    "labels": lambda path: read_labels(path, label_column="age"),
    "text": lambda path: read_item_text(path, text_columns=["title", "genre"]),
    "lines": read_peterrec_lines,
}


@pytest.mark.parametrize("case, name, content, reader, fragments", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_input_gives_one_line_data_error(tmp_path, case, name, content, reader, fragments):
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    with pytest.raises(DataError) as info:
        READERS[reader](path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message
