"""Ragged histories with sparse exclusions rank exactly as the padded, dense path does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peterrec.data.next_item import Histories
from peterrec.data.sequences import pad_histories
from peterrec.evaluation.ranking import evaluate_ranking, rank_targets

NUM_ITEMS = 40


def _ragged(rng, users: int, longest: int) -> tuple[Histories, list[np.ndarray], np.ndarray]:
    lengths = rng.integers(0, 12, size=users)
    lengths[3] = longest  # one very long history
    values = rng.integers(0, NUM_ITEMS + 4, size=int(lengths.sum()) + 5).astype(np.int32)  # specials too
    starts = np.concatenate([[2], 2 + np.cumsum(lengths)[:-1]])
    histories = Histories(values, starts, lengths)
    targets = rng.integers(4, NUM_ITEMS + 4, size=users)
    return histories, [histories[r] for r in range(users)], targets


def _tied_scorer(width_seen: list[int], input_len: int):
    """Scores from the last ``input_len`` positions, coarse enough to tie often."""

    def scorer(hist: torch.Tensor) -> torch.Tensor:
        width_seen.append(hist.shape[1])
        tail = hist[:, -input_len:].float()
        base = torch.arange(NUM_ITEMS, dtype=torch.float32) % 5
        return base.unsqueeze(0) + (tail.sum(dim=1, keepdim=True) % 3)

    return scorer


@pytest.mark.parametrize("input_len", [1, 3, 8, 1000])
@pytest.mark.parametrize("exclude", [True, False])
def test_same_ranks_as_the_dense_path(input_len, exclude):
    rng = np.random.default_rng(input_len)
    histories, rows, targets = _ragged(rng, users=37, longest=300)
    dense = pad_histories(rows)
    seen: list[int] = []
    kwargs = {"batch_size": 8, "device": torch.device("cpu"), "exclude_history": exclude}
    expected = rank_targets(_tied_scorer(seen, input_len), dense, targets, **kwargs)
    got = rank_targets(_tied_scorer(seen, input_len), histories, targets, input_len=input_len, **kwargs)
    np.testing.assert_array_equal(got, expected)
    whole = rank_targets(_tied_scorer(seen, input_len), histories, targets, **kwargs)
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(histories.dense(), dense)


def test_batch_memory_does_not_grow_with_the_longest_history():
    rng = np.random.default_rng(0)
    histories, _rows, targets = _ragged(rng, users=20, longest=200_000)
    seen: list[int] = []
    rank_targets(
        _tied_scorer(seen, 4), histories, targets, batch_size=5, device=torch.device("cpu"), input_len=4
    )
    assert set(seen) == {4}  # the model input is (batch, input_len), not (batch, longest)
    rows, cols = histories.columns(np.arange(5))
    assert len(rows) == len(cols) == histories.lengths[:5].sum()  # exclusions: the batch's clicks only


def test_sample_is_labelled_and_matches_the_full_ranks():
    rng = np.random.default_rng(1)
    histories, _rows, targets = _ragged(rng, users=50, longest=30)
    scorer = _tied_scorer([], 5)
    full_metrics, full = evaluate_ranking(
        scorer, histories, targets, batch_size=7, input_len=5, prefix="valid/"
    )
    metrics, ranks = evaluate_ranking(
        scorer, histories, targets, batch_size=7, input_len=5, prefix="valid/", sample=10, seed=3
    )
    assert set(metrics) == {k.replace("valid/", "valid/sample10/") for k in full_metrics}
    chosen = np.sort(np.random.default_rng(3).choice(50, size=10, replace=False))
    np.testing.assert_array_equal(ranks, full[chosen])
    everyone, _ = evaluate_ranking(scorer, histories, targets, batch_size=7, input_len=5, sample=500)
    assert set(everyone) == {k.replace("valid/", "") for k in full_metrics}


def test_history_id_out_of_range_is_an_error():
    histories = Histories(np.array([4, NUM_ITEMS + 4], dtype=np.int32), np.array([0]), np.array([2]))
    with pytest.raises(ValueError, match="num_items"):
        rank_targets(_tied_scorer([], 2), histories, np.array([5]), batch_size=4, device=torch.device("cpu"))
