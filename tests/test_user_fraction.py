"""Pretraining on part of the source users: a documented, nested subset, with its own vocabulary."""

from __future__ import annotations

import math

import pytest
from conftest import SAMPLE_DATA

from peterrec.config import DataConfig, FinetuneConfig, load_config
from peterrec.data.next_item import load_next_item_data
from peterrec.errors import ConfigError


def data(fraction: float):
    return load_next_item_data(DataConfig(path=str(SAMPLE_DATA), max_len=20, user_fraction=fraction))


def test_fractions_keep_nested_subsets_and_build_their_own_vocabulary():
    everyone, half, quarter = data(1.0), data(0.5), data(0.25)
    assert len(half.users) == math.ceil(0.5 * len(everyone.users))
    assert len(quarter.users) == math.ceil(0.25 * len(everyone.users))
    assert set(quarter.users) < set(half.users) < set(everyone.users)
    clicked = {int(i) for seq in quarter.train for i in seq} | set(quarter.test_targets.tolist())
    clicked |= set(quarter.valid_targets.tolist())
    assert quarter.num_items <= everyone.num_items
    assert all(4 <= i < quarter.num_items + 4 for i in clicked)
    assert data(0.25).users == quarter.users  # deterministic


def test_user_fraction_is_for_pretraining_only():
    with pytest.raises(ConfigError, match="task.train_fraction"):
        load_config(FinetuneConfig, None, ["task.labels=x.csv", "data.user_fraction=0.5"])
    with pytest.raises(ConfigError, match="data.user_fraction"):
        load_config(FinetuneConfig, None, ["task.labels=x.csv", "data.user_fraction=0"])
