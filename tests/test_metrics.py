"""Metrics against hand-computed values on tiny rankings (ties count against the model)."""

import math

import numpy as np
import pytest
import torch

from peterrec.evaluation.metrics import (
    classification_metrics,
    history_columns,
    hit_rate,
    mrr,
    ndcg,
    paired_bootstrap_ci,
    per_user_correct,
    per_user_ranking_metrics,
    ranking_metrics,
    sampled_ranks,
    target_ranks,
)

# ----------------------------------------------------------------------------------------- target_ranks


def test_target_ranks_strict_order():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    assert target_ranks(scores, torch.tensor([2, 3])).tolist() == [1, 3]
    assert target_ranks(scores, torch.tensor([1, 0])).tolist() == [0, 0]


def test_tie_with_one_other_item_counts_target_as_rank_one():
    scores = torch.tensor([[0.7, 0.7, 0.1]])
    assert target_ranks(scores, torch.tensor([0])).tolist() == [1]
    assert target_ranks(scores, torch.tensor([1])).tolist() == [1]


def test_constant_scorer_ranks_every_target_last():
    n = 20
    scores = torch.zeros(5, n)
    ranks = target_ranks(scores, torch.tensor([0, 3, 7, 11, 19]))
    assert ranks.tolist() == [n - 1] * 5
    assert hit_rate(ranks, 10) == 0.0
    assert ndcg(ranks, 10) == 0.0


def test_excluded_item_above_target_no_longer_counts():
    scores = torch.tensor([[0.9, 0.8, 0.5, 0.1]])
    target = torch.tensor([2])
    assert target_ranks(scores, target).tolist() == [2]
    assert target_ranks(scores, target, torch.tensor([[0, -1]])).tolist() == [1]
    assert target_ranks(scores, target, torch.tensor([[0, 1]])).tolist() == [0]
    # Excluding an item below the target changes nothing.
    assert target_ranks(scores, target, torch.tensor([[3, -1]])).tolist() == [2]


def test_target_is_never_excluded_even_if_in_history():
    scores = torch.tensor([[0.9, 0.8, 0.5, 0.1]])
    ranks = target_ranks(scores, torch.tensor([2]), torch.tensor([[2, 0]]))
    assert ranks.tolist() == [1]  # only item 1 is above the target now


def test_excluded_items_do_not_tie_with_a_minus_inf_target():
    scores = torch.tensor([[float("-inf"), 0.5, 0.2]])
    ranks = target_ranks(scores, torch.tensor([0]), torch.tensor([[1, 2]]))
    assert ranks.tolist() == [0]


def test_exclude_with_only_padding_is_a_no_op_per_row():
    scores = torch.tensor([[0.9, 0.8, 0.5], [0.9, 0.8, 0.5]])
    exclude = torch.tensor([[-1, -1], [0, -1]])
    assert target_ranks(scores, torch.tensor([2, 2]), exclude).tolist() == [2, 1]


def test_history_columns_maps_ids_to_columns_and_drops_specials():
    hist = torch.tensor([[0, 0, 2, 4, 7], [1, 3, 5, 5, 6]])
    assert history_columns(hist, num_items=4).tolist() == [[-1, -1, -1, 0, 3], [-1, -1, 1, 1, 2]]
    with pytest.raises(ValueError):
        history_columns(torch.tensor([[8]]), num_items=4)


def test_nan_scores_raise():
    scores = torch.tensor([[0.1, float("nan")]])
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(scores, torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        sampled_ranks(scores, torch.tensor([0]), torch.tensor([[1]]))


def test_out_of_range_target_or_exclude_raises():
    scores = torch.zeros(1, 3)
    with pytest.raises(ValueError):
        target_ranks(scores, torch.tensor([3]))
    with pytest.raises(ValueError):
        target_ranks(scores, torch.tensor([0]), torch.tensor([[5]]))


# ----------------------------------------------------------------------------------------- sampled_ranks


def test_sampled_ranks_hand_computed():
    scores = torch.tensor([[0.5, 0.9, 0.1, 0.5, 0.7, 0.2]])
    # Target column 0 (0.5) vs negatives 1 (0.9, above), 2 (0.1, below), 3 (0.5, tie): rank 2.
    assert sampled_ranks(scores, torch.tensor([0]), torch.tensor([[1, 2, 3]])).tolist() == [2]
    assert sampled_ranks(scores, torch.tensor([0]), torch.tensor([[2, 5]])).tolist() == [0]
    assert sampled_ranks(scores, torch.tensor([1]), torch.tensor([[0, 2, 3, 4, 5]])).tolist() == [0]


def test_sampled_ranks_rejects_target_among_negatives():
    with pytest.raises(ValueError, match="negative"):
        sampled_ranks(torch.zeros(1, 4), torch.tensor([2]), torch.tensor([[0, 2]]))


# ----------------------------------------------------------------------------------------- ranking metrics


def test_hit_rate_k_boundary():
    ranks = torch.tensor([0, 4, 5, 9])
    assert hit_rate(ranks, 5) == 0.5
    assert hit_rate(ranks, 6) == 0.75
    assert hit_rate(ranks, 1) == 0.25
    assert hit_rate(np.array([9, 10]), 10) == 0.5


def test_ndcg_exact_values():
    assert ndcg(torch.tensor([0]), 10) == pytest.approx(1.0)
    assert ndcg(torch.tensor([1]), 10) == pytest.approx(1 / math.log2(3))
    assert ndcg(np.array([2]), 10) == pytest.approx(0.5)
    assert ndcg(torch.tensor([9]), 10) == pytest.approx(1 / math.log2(11))
    assert ndcg(torch.tensor([10]), 10) == 0.0
    assert ndcg(torch.tensor([0, 1, 10]), 10) == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_mrr_with_and_without_k():
    ranks = torch.tensor([0, 1, 3, 9])
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 10) / 4)
    assert mrr(ranks, k=3) == pytest.approx((1 + 1 / 2) / 4)
    assert mrr(ranks, k=4) == pytest.approx((1 + 1 / 2 + 1 / 4) / 4)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError):
        hit_rate(torch.tensor([], dtype=torch.long), 5)
    with pytest.raises(ValueError):
        ndcg(torch.tensor([0]), 0)
    with pytest.raises(ValueError):
        mrr(np.array([-1]))


def test_ranking_metrics_keys_and_values():
    ranks = torch.tensor([0, 2, 7, 15, 30])
    out = ranking_metrics(ranks, ks=(5, 10, 20))
    expected_keys = {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)} | {"mrr"}
    assert set(out) == expected_keys
    assert out["hr@5"] == pytest.approx(2 / 5)
    assert out["hr@10"] == pytest.approx(3 / 5)
    assert out["hr@20"] == pytest.approx(4 / 5)
    assert out["ndcg@5"] == pytest.approx((1 + 0.5) / 5)
    assert out["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 8) / 5)
    assert out["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 8 + 1 / 16 + 1 / 31) / 5)


def test_per_user_metrics_match_means():
    ranks = np.array([0, 3, 12])
    per_user = per_user_ranking_metrics(ranks, ks=(10,))
    assert per_user["hr@10"].tolist() == [1.0, 1.0, 0.0]
    assert per_user["ndcg@10"][1] == pytest.approx(1 / math.log2(5))
    means = ranking_metrics(ranks, ks=(10,))
    assert all(means[k] == pytest.approx(v.mean()) for k, v in per_user.items())


# ----------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_identical_inputs_contain_zero():
    a = np.random.default_rng(1).random(200)
    diff, low, high = paired_bootstrap_ci(a, a.copy())
    assert diff == 0.0 and low <= 0.0 <= high


def test_bootstrap_clear_difference_excludes_zero():
    rng = np.random.default_rng(2)
    b = rng.random(200)
    a = b + 0.1 + 0.05 * rng.standard_normal(200)
    diff, low, high = paired_bootstrap_ci(a, b, n_resamples=500, seed=3)
    assert 0.0 < low < diff < high
    assert diff == pytest.approx(float((a - b).mean()))
    assert paired_bootstrap_ci(a, b, n_resamples=500, seed=3) == (diff, low, high)


def test_bootstrap_zero_mean_difference_contains_zero():
    a = np.random.default_rng(4).random(300)
    b = a + np.tile([0.2, -0.2], 150)  # per-user differences that cancel exactly
    diff, low, high = paired_bootstrap_ci(a, b)
    assert diff == pytest.approx(0.0, abs=1e-12)
    assert low < 0.0 < high
    assert high - low > 0.02  # a real interval, not the degenerate one of identical inputs


def test_bootstrap_rejects_unpaired():
    with pytest.raises(ValueError):
        paired_bootstrap_ci(np.zeros(3), np.zeros(4))


# ----------------------------------------------------------------------------------------- classification


def test_classification_metrics_binary_hand_computed():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    labels = np.array([0, 0, 1, 1])
    out = classification_metrics(probs, labels)
    # Predictions 0, 1, 1, 0: accuracy 0.5; F1 of each class = 0.5, macro 0.5.
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["macro_f1"] == pytest.approx(0.5)
    # Positive scores {0.7, 0.2} vs negative {0.1, 0.6}: pairs won 0.7>0.1, 0.7>0.6, 0.2>0.1 -> 3/4.
    assert out["auc"] == pytest.approx(0.75)
    assert per_user_correct(probs, labels).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_classification_metrics_multiclass_macro_f1():
    probs = np.eye(3)[[0, 0, 1, 2, 2, 2]]
    labels = np.array([0, 1, 1, 2, 2, 0])
    out = classification_metrics(probs, labels)
    assert "auc" not in out
    assert out["accuracy"] == pytest.approx(4 / 6)
    # Class 0: P=1/2 R=1/2 F1=1/2; class 1: P=1 R=1/2 F1=2/3; class 2: P=2/3 R=1 F1=4/5.
    assert out["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)


def test_classification_metrics_rejects_bad_labels():
    with pytest.raises(ValueError):
        classification_metrics(np.full((2, 2), 0.5), np.array([0, 2]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ranks_on_cuda_match_cpu():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (8, 30), generator=gen).float()
    targets = torch.randint(0, 30, (8,), generator=gen)
    exclude = torch.randint(-1, 30, (8, 6), generator=gen)
    negatives = (targets.unsqueeze(1) + torch.arange(1, 11)) % 30
    cpu = target_ranks(scores, targets, exclude)
    assert torch.equal(target_ranks(scores.cuda(), targets.cuda(), exclude.cuda()).cpu(), cpu)
    assert torch.equal(
        sampled_ranks(scores.cuda(), targets.cuda(), negatives.cuda()).cpu(),
        sampled_ranks(scores, targets, negatives),
    )
