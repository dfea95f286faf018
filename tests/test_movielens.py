"""`peterrec data movielens`: profile labels and the genre cold-start split, on tiny synthetic files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from peterrec.config import FinetuneConfig, PretrainConfig, load_config
from peterrec.data.movielens import age_bucket, build_movielens_tasks, split_genres
from peterrec.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
USER_HEADER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"

# Four users; items a-d are source, "Toy Story" (Animation) and "Babe" (Children's) are target.
ITEMS = {
    "a": "Drama",
    "b": "Comedy Romance",
    "c": "Action",
    "d": "Drama Thriller",
    "Toy Story": "Animation Children's Comedy",
    'Babe "the pig"': "children's Drama",  # case differs from the default target genre
}
CLICKS = [  # (user, item, timestamp), in file order; equal timestamps must keep this order
    ("1", "a", 30),
    ("1", "Toy Story", 10),
    ("1", "b", 10),
    ("2", "c", 5),
    ("2", "d", 6),
    ("3", 'Babe "the pig"', 7),
    ("4", "a", 1),
    ("4", 'Babe "the pig"', 2),
    ("4", "Toy Story", 3),
]
USERS = [
    ("1", "24", "M", "technician"),
    ("2", "53", "F", "other"),
    ("3", "17", "M", "student"),
    ("4", "56", "F", "4"),
]


def write_dataset(
    folder: Path,
    *,
    clicks=CLICKS,
    users=USERS,
    items=ITEMS,
    genre_header: str = "class:token_seq",
    user_header: str = USER_HEADER,
    item_ids: dict[str, str] | None = None,
) -> Path:
    """RecBole atomic files ml.inter, ml.user, ml.item in ``folder``; ``item_ids`` renames items."""
    folder.mkdir(parents=True, exist_ok=True)
    rename = item_ids or {}
    inter = [INTER_HEADER] + [f"{u}\t{rename.get(i, i)}\t4\t{t}" for u, i, t in clicks]
    (folder / "ml.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    user_lines = [user_header] + [f"{u}\t{age}\t{g}\t{occ}\t00000" for u, age, g, occ in users]
    (folder / "ml.user").write_text("\n".join(user_lines) + "\n", encoding="utf-8")
    item_lines = [f"item_id:token\tmovie_title:token_seq\trelease_year:token\t{genre_header}"]
    item_lines += [f"{rename.get(i, i)}\t{i}\t1995\t{g}" for i, g in items.items()]
    (folder / "ml.item").write_text("\n".join(item_lines) + "\n", encoding="utf-8")
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("age", "bucket"),
    [
        ("0", "<18"),
        ("17", "<18"),
        ("17.9", "<18"),
        ("18", "18-24"),
        ("24", "18-24"),
        ("25", "25-34"),
        ("34", "25-34"),
        ("35", "35-44"),
        ("44", "35-44"),
        ("45", "45-49"),
        ("49", "45-49"),
        ("50", "50-55"),
        ("55", "50-55"),
        ("56", "56+"),
        ("73", "56+"),
        ("1", "<18"),  # ML-1M's own code for "under 18"
    ],
)
def test_exact_ages_fall_into_ml1m_buckets(age, bucket):
    assert age_bucket(age) == bucket


@pytest.mark.parametrize("bucket", ["<18", "18-24", "56+", "Under 18"])
def test_bucketed_ages_are_kept(bucket):
    assert age_bucket(bucket) == bucket


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("Animation Children's Comedy", ["Animation", "Children's", "Comedy"]),
        ("Animation, Children's,Comedy", ["Animation", "Children's", "Comedy"]),
        ("Animation|Children's|Film Noir", ["Animation", "Children's", "Film Noir"]),
    ],
)
def test_genre_separators(value, tokens):
    assert split_genres(value) == tokens


def check_split(out: Path, summary: dict, rename: dict[str, str] | None = None) -> None:
    rename = rename or {}
    target_ids = {rename.get(i, i) for i in ("Toy Story", 'Babe "the pig"')}
    inter = read_csv(out / "interactions.csv")
    source, target = read_csv(out / "source.csv"), read_csv(out / "target.csv")
    assert len(inter) == len(CLICKS) == len(source) + len(target)
    assert {r["item_id"] for r in target} == target_ids
    assert not {r["item_id"] for r in source} & target_ids
    # time order, equal timestamps (user 1 at t=10) in file order
    assert [r["timestamp"] for r in inter] == sorted((r["timestamp"] for r in inter), key=int)
    user1 = [r["item_id"] for r in inter if r["user_id"] == "1"]
    assert user1 == [rename.get("Toy Story", "Toy Story"), rename.get("b", "b"), rename.get("a", "a")]
    assert summary["target_items"] == 2 and summary["source_items"] == 4
    assert summary["users_in_both"] == 2  # users 1 and 4; user 2 has source only, user 3 target only
    assert summary["users_with_source"] == 3 and summary["users_with_target"] == 3
    assert summary["clicks"] == 9 and summary["users"] == 4 and summary["items"] == 6


def test_builds_all_files_with_string_item_ids(tmp_path):
    summary = build_movielens_tasks(write_dataset(tmp_path / "in"), tmp_path / "out")
    out = tmp_path / "out"
    for name in (
        "interactions.csv",
        "labels.csv",
        "source.csv",
        "target.csv",
        "items.csv",
        "summary.json",
        "README.md",
    ):
        assert (out / name).is_file()
    check_split(out, summary)
    assert json.loads((out / "summary.json").read_text()) == summary
    labels = read_csv(out / "labels.csv")
    assert [(r["user_id"], r["gender"], r["age"], r["occupation"]) for r in labels] == [
        ("1", "M", "18-24", "technician"),
        ("2", "F", "50-55", "other"),
        ("3", "M", "<18", "student"),
        ("4", "F", "56+", "4"),  # numeric occupations stay as they are
    ]
    assert summary["label_classes"]["age"] == {"18-24": 1, "50-55": 1, "<18": 1, "56+": 1}
    assert "redistribute" in (out / "README.md").read_text()


def test_numeric_item_ids_and_genre_column(tmp_path):
    rename = {item: str(100 + n) for n, item in enumerate(ITEMS)}
    folder = write_dataset(tmp_path / "in", item_ids=rename, genre_header="genre:token_seq")
    check_split(tmp_path / "out", build_movielens_tasks(folder, tmp_path / "out"), rename)


def test_comma_separated_genres_and_custom_targets(tmp_path):
    items = {item: genres.replace(" ", ",") for item, genres in ITEMS.items()}
    folder = write_dataset(tmp_path / "in", items=items)
    summary = build_movielens_tasks(folder, tmp_path / "out")
    assert summary["target_items"] == 2
    summary = build_movielens_tasks(folder, tmp_path / "out2", target_genres=("thriller",))
    assert summary["target_items"] == 1 and summary["target_clicks"] == 1
    assert [r["item_id"] for r in read_csv(tmp_path / "out2" / "target.csv")] == ["d"]


def test_bucketed_ages_in_the_user_file_are_kept(tmp_path):
    users = [
        (u, bucket, g, o)
        for (u, _, g, o), bucket in zip(USERS, ["25-34", "56+", "<18", "25-34"], strict=True)
    ]
    build_movielens_tasks(write_dataset(tmp_path / "in", users=users), tmp_path / "out")
    assert [r["age"] for r in read_csv(tmp_path / "out" / "labels.csv")] == ["25-34", "56+", "<18", "25-34"]


def test_labelled_users_without_clicks_are_skipped(tmp_path):
    users = [*USERS, ("99", "30", "F", "writer")]
    summary = build_movielens_tasks(write_dataset(tmp_path / "in", users=users), tmp_path / "out")
    assert summary["labelled_users"] == 4 and summary["labelled_users_without_clicks"] == 1
    assert "99" not in {r["user_id"] for r in read_csv(tmp_path / "out" / "labels.csv")}


@pytest.mark.parametrize("missing", ["ml.inter", "ml.user", "ml.item"])
def test_missing_file(tmp_path, missing):
    folder = write_dataset(tmp_path / "in")
    (folder / missing).unlink()
    with pytest.raises(DataError, match=rf"no \.{missing.split('.')[1]} file"):
        build_movielens_tasks(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        build_movielens_tasks(tmp_path / "nowhere", tmp_path / "out")


def test_missing_label_column_names_what_was_found(tmp_path):
    header = "user_id:token\tage:token\tsex:token\toccupation:token\tzip_code:token"
    with pytest.raises(DataError, match=r"no 'gender' column \(found: 'user_id', 'age', 'sex'"):
        build_movielens_tasks(write_dataset(tmp_path / "in", user_header=header), tmp_path / "out")


def test_missing_genre_column(tmp_path):
    folder = write_dataset(tmp_path / "in", genre_header="tags:token_seq")
    with pytest.raises(DataError, match=r"no genre column \(found: .*'tags'\).*'class' or 'genre'"):
        build_movielens_tasks(folder, tmp_path / "out")


def test_no_item_matches_the_target_genres(tmp_path):
    folder = write_dataset(tmp_path / "in")
    with pytest.raises(DataError, match=r"no clicked item has genre 'Western' \(genres seen: .*'Drama'"):
        build_movielens_tasks(folder, tmp_path / "out", target_genres=("Western",))


def test_item_ids_that_do_not_match(tmp_path):
    folder = write_dataset(tmp_path / "in")
    (folder / "ml.item").write_text("item_id:token\tclass:token_seq\nzzz\tDrama\n", encoding="utf-8")
    with pytest.raises(DataError, match="none of the 6 clicked items"):
        build_movielens_tasks(folder, tmp_path / "out")


def test_cli_builds_and_reports(tmp_path, cli):
    folder = write_dataset(tmp_path / "in")
    result = cli("data", "movielens", "--input", folder, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "2 target items" in result.output and "2 users in both" in result.output
    assert (tmp_path / "out" / "labels.csv").is_file()


def test_cli_error_is_one_line(tmp_path, cli):
    folder = write_dataset(tmp_path / "in")
    result = cli(
        "data", "movielens", "--input", folder, "--out", tmp_path / "out", "--target-genres", "Western"
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize("task", ["gender", "age", "occupation", "coldrec"])
def test_finetune_configs_load(task):
    config = load_config(FinetuneConfig, REPO_ROOT / "configs" / "finetune" / f"ml100k_{task}.yaml")
    assert config.data.path.startswith("data/external/ml100k-tasks/")
    assert config.task.split == [0.8, 0.1, 0.1]
    if task == "coldrec":
        assert config.task.target == "data/external/ml100k-tasks/target.csv"
        assert config.data.path.endswith("source.csv")
    else:
        assert config.task.label_column == task and config.data.path.endswith("interactions.csv")


def test_source_pretrain_config_loads():
    config = load_config(
        PretrainConfig, REPO_ROOT / "configs" / "pretrain" / "ml100k_source_autoregressive.yaml"
    )
    assert config.data.path == "data/external/ml100k-tasks/source.csv"
