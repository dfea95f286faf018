"""Cross-validation over users (task.folds) and the per-user outputs that compare pools and bootstraps."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO_ROOT
from sklearn.metrics import f1_score, roc_auc_score

from peterrec.config import FinetuneConfig, load_config
from peterrec.data import fold_users
from peterrec.errors import ConfigError
from peterrec.evaluation.metrics import paired_bootstrap_ci
from peterrec.evaluation.user_results import (
    UserOutputs,
    paired_bootstrap_metric_ci,
    pool_folds,
    weighted_auc,
    weighted_macro_f1,
)
from peterrec.tasks.base import split_task_users

GENDER = REPO_ROOT / "configs" / "finetune" / "sample_gender.yaml"
USERS = [f"u{i:03d}" for i in range(103)]


def test_every_user_is_tested_in_exactly_one_fold():
    tested = []
    for fold in range(5):
        train, valid, test = fold_users(USERS, 5, fold, valid_share=0.125, seed=3)
        assert not set(train) & set(valid) and not set(train) & set(test) and not set(valid) & set(test)
        assert sorted(train + valid + test) == USERS
        assert len(test) in (20, 21) and len(valid) == round(0.125 * (len(USERS) - len(test)))
        tested += test
    assert sorted(tested) == USERS
    # deterministic in the seed, independent of the input order; another seed, other folds
    assert fold_users(USERS[::-1], 5, 2, 0.125, seed=3) == fold_users(USERS, 5, 2, 0.125, seed=3)
    assert fold_users(USERS, 5, 2, 0.125, seed=4)[2] != fold_users(USERS, 5, 2, 0.125, seed=3)[2]


def test_fold_arguments_are_checked():
    with pytest.raises(ValueError, match="folds"):
        fold_users(USERS, 5, 5, 0.1)
    with pytest.raises(ValueError, match="cannot make"):
        fold_users(USERS[:3], 5, 0, 0.1)


def test_the_task_split_follows_the_config_fold():
    config = load_config(FinetuneConfig, GENDER, ["task.folds=4", "task.fold=1", "task.split=[0.6,0.2,0.2]"])
    splits = split_task_users(USERS, config)  # valid share of the non-test users: 0.2 / (0.6 + 0.2)
    expected = fold_users(USERS, 4, 1, 0.25, seed=0)
    assert splits == dict(zip(("train", "valid", "test"), expected, strict=True))
    assert split_task_users(USERS, load_config(FinetuneConfig, GENDER))["test"] != splits["test"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.folds=3", "task.fold=3"], r"task.fold must lie in \[0, task.folds - 1\] = \[0, 2\]"),
        (["task.folds=0"], "task.folds"),
    ],
)
def test_bad_fold_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(FinetuneConfig, GENDER, overrides)


def test_weighted_metrics_equal_sklearn_on_repeated_users():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=40) / 5.0  # many ties
    labels = rng.integers(0, 2, size=40)
    counts = rng.integers(0, 4, size=40)
    counts[labels == 1][0] += 1
    repeated = np.repeat(np.arange(40), counts)
    expected = roc_auc_score(labels[repeated], scores[repeated])
    assert weighted_auc(scores, labels, counts[None, :].astype(float))[0] == pytest.approx(expected)
    assert weighted_auc(scores, labels, np.ones((1, 40)))[0] == pytest.approx(roc_auc_score(labels, scores))

    classes = rng.integers(0, 4, size=40)
    predicted = rng.integers(0, 5, size=40)  # class 4 is predicted but never true
    f1 = f1_score(classes[repeated], predicted[repeated], average="macro", zero_division=0)
    assert weighted_macro_f1(predicted, classes, 5, counts[None, :].astype(float))[0] == pytest.approx(f1)


def test_a_resample_with_one_class_has_no_auc():
    assert np.isnan(weighted_auc(np.array([0.1, 0.9]), np.array([0, 1]), np.array([[2.0, 0.0]])))[0]


def outputs_of(users, labels, probs) -> UserOutputs:
    correct = (probs.argmax(axis=1) == labels).astype(float)
    return UserOutputs(list(users), {"accuracy": correct}, np.asarray(labels), np.asarray(probs))


def test_pooled_folds_are_ordered_by_user_and_refuse_a_user_twice():
    a = outputs_of(["c", "a"], [0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]))
    b = outputs_of(["b"], [1], np.array([[0.6, 0.4]]))
    pooled = pool_folds([a, b])
    assert pooled.users == ["a", "b", "c"] and pooled.labels.tolist() == [1, 1, 0]
    assert pooled.summary()["accuracy"] == pytest.approx(2 / 3)
    assert pooled.summary()["auc"] == pytest.approx(roc_auc_score([1, 1, 0], [0.8, 0.4, 0.1]))
    with pytest.raises(ValueError, match="more than one fold"):
        pool_folds([a, a])


def test_paired_bootstrap_of_auc_and_of_a_mean():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=300)
    good = np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.2, 300), 0, 1)
    noise = rng.uniform(size=300)
    users = [str(i) for i in range(300)]
    a = outputs_of(users, labels, np.stack([1 - good, good], axis=1))
    b = outputs_of(users, labels, np.stack([1 - noise, noise], axis=1))
    diff, low, high = paired_bootstrap_metric_ci([a], [b], "auc", n_resamples=400)
    assert diff == pytest.approx(roc_auc_score(labels, good) - roc_auc_score(labels, noise))
    assert 0 < low < diff < high  # a clearly better model: the CI excludes 0
    assert paired_bootstrap_metric_ci([a], [b], "auc", n_resamples=400) == (diff, low, high)
    assert paired_bootstrap_metric_ci([a], [a], "auc", n_resamples=50) == (0.0, 0.0, 0.0)
    # Two seeds of one method: the difference is of the seed means.
    two = paired_bootstrap_metric_ci([a, b], [b], "accuracy", n_resamples=50)[0]
    assert two == pytest.approx((a.values["accuracy"].mean() - b.values["accuracy"].mean()) / 2)
    # For a per-user mean the CI agrees with the plain paired bootstrap of per-user differences.
    _, low_mean, high_mean = paired_bootstrap_metric_ci([a], [b], "accuracy", n_resamples=2000)
    _, low_plain, high_plain = paired_bootstrap_ci(a.values["accuracy"], b.values["accuracy"], 2000)
    assert low_mean == pytest.approx(low_plain, abs=0.02) and high_mean == pytest.approx(high_plain, abs=0.02)


def test_outputs_of_other_users_are_refused():
    a = outputs_of(["a", "b"], [0, 1], np.eye(2))
    b = outputs_of(["b", "a"], [1, 0], np.eye(2)[::-1])
    with pytest.raises(ValueError, match="same users in the same order"):
        paired_bootstrap_metric_ci([a], [b], "auc")
