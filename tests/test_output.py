"""Output a person reads: item ids as written, a table view beside JSON."""

from __future__ import annotations

import json

import pytest
from conftest import REPO_ROOT

from peterrec.commands import recommend
from peterrec.commands.recommend import records_table

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "v0.1.0"


def test_json_lines_keep_item_ids_as_written(monkeypatch):
    record = {"user": "Zoë", "items": ["Amélie (2001)", "東京物語"], "scores": [1.5, 0.25]}
    monkeypatch.setattr(recommend, "recommend_records", lambda *args: iter([record]))
    (line,) = recommend.recommend_lines(None, [], None, 2)
    assert "Amélie (2001)" in line and "東京物語" in line and "\\u" not in line
    assert json.loads(line) == record


def test_table_of_items_and_of_probabilities():
    items = records_table([{"user": "u1", "items": ["Amélie", "b"], "scores": [2.0, 1.0]}])
    assert items.splitlines()[0] == "| user | rank | item | score |"
    assert "| u1 | 1 | Amélie | 2.0000 |" in items and "| u1 | 2 | b | 1.0000 |" in items
    probs = records_table([{"user": "u1", "probabilities": {"F": 0.25, "M": 0.75}}])
    assert probs.splitlines()[0] == "| user | P(F) | P(M) |" and "| u1 | 0.2500 | 0.7500 |" in probs


@pytest.mark.parametrize("run", ["gender-peterrec", "coldrec-fine_last1"])
def test_recommend_table_from_the_command_line(cli, run, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    result = cli("recommend", FIXTURES / run, "--user", "u00001", "-k", "3", "--format", "table")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("| user |") and all(line.startswith("| u00001 |") for line in lines[2:])


def test_evaluate_a_sample_of_users(cli, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    result = cli("evaluate", FIXTURES / "backbone", "--sample", "50")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{") :])
    assert set(metrics) and all(key.startswith("test/sample50/") for key in metrics)
    refused = cli("evaluate", FIXTURES / "gender-peterrec", "--sample", "5")
    assert refused.exit_code == 2 and "only a pretraining run" in refused.stderr
