"""Baselines on tiny hand-made sequences (item ids start at 4; column j is item id j + 4)."""

import numpy as np
import pytest
import torch

from peterrec.evaluation.baselines import (
    CooccurrenceKNNScorer,
    MarkovScorer,
    PopularityScorer,
    bag_of_items_logistic,
    majority_class,
)
from peterrec.evaluation.metrics import history_columns, target_ranks

# Transitions 4->5 x2, 5->6, 5->7, 4->6, 7->7 x2. Clicks: item 4: 3, 5: 2, 6: 2, 7: 4.
TRAIN = [np.array([4, 5, 6]), np.array([4, 5, 7]), np.array([4, 6]), np.array([0, 0, 7, 7, 7])]
POPULARITY = [3.0, 2.0, 2.0, 4.0]


def test_popularity_scores_are_counts_for_every_user():
    scorer = PopularityScorer(TRAIN, num_items=4)
    scores = scorer.scores(torch.tensor([[0, 4], [5, 6], [0, 0]]))
    assert scores.dtype == torch.float32
    assert scores.tolist() == [POPULARITY] * 3


def test_popularity_rejects_unknown_item_ids():
    with pytest.raises(ValueError, match="num_items"):
        PopularityScorer([np.array([4, 8])], num_items=4)


def test_markov_prefers_the_observed_successor():
    scorer = MarkovScorer(TRAIN, num_items=4)
    assert scorer.transitions.toarray().tolist() == [
        [0, 2, 1, 0],
        [0, 0, 1, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 2],
    ]
    scores = scorer.scores(torch.tensor([[0, 0, 6, 4]]))
    # Transition counts from item 4 plus 0.5 * popularity / 4.
    assert scores[0].tolist() == pytest.approx([0.375, 2.25, 1.25, 0.5])
    assert int(scores[0].argmax()) == 1  # item 5


def test_markov_popularity_breaks_ties_among_transitions_only():
    scorer = MarkovScorer(TRAIN, num_items=4)
    scores = scorer.scores(torch.tensor([[4, 5]]))[0]
    # From item 5: items 6 and 7 were each seen once; item 7 is more popular, so it wins the tie.
    assert scores[3] > scores[2]
    # Item 4 is more popular than item 6 but was never seen after 5: it must stay below every transition.
    assert scores[2] > scores[0]
    assert scores[1] < scores[0]  # popularity 2 < 3 among the zero-transition items


def test_markov_empty_history_falls_back_to_popularity():
    scorer = MarkovScorer(TRAIN, num_items=4)
    scores = scorer.scores(torch.tensor([[0, 0, 0], [0, 2, 3]]))  # pads only; [CLS]/[UNK] only
    for row in scores:
        assert row.argsort(descending=True).tolist()[:2] == [3, 0]
        assert row[1] == row[2]  # equal popularity stays tied


def test_markov_ignores_trailing_special_ids_and_ranks_end_to_end():
    scorer = MarkovScorer(TRAIN, num_items=4)
    hist = torch.tensor([[0, 4, 3], [0, 0, 4]])  # [UNK] after item 4 is ignored
    scores = scorer.scores(hist)
    assert torch.equal(scores[0], scores[1])
    ranks = target_ranks(scores, torch.tensor([1, 2]), history_columns(hist, 4))
    assert ranks.tolist() == [0, 1]  # item 5 first; item 6 behind item 5 (item 4 excluded as history)


# Source ids 4..6 (columns 0..2) and target ids 4..6 (columns 0..2), one row per training user.
SOURCE = [np.array([4, 5]), np.array([4]), np.array([6]), np.array([5, 5]), np.array([0])]
TARGET = [np.array([4]), np.array([4, 5]), np.array([6]), np.array([5, 6]), np.array([4])]


def _knn(normalization: str) -> CooccurrenceKNNScorer:
    return CooccurrenceKNNScorer(SOURCE, TARGET, 3, 3, normalization=normalization)


def test_knn_cooccurrence_counts_users_once_per_pair():
    assert _knn("count").cooccurrence.toarray().tolist() == [[2, 1, 0], [1, 1, 1], [0, 0, 1]]
    assert _knn("count").target_popularity.tolist() == [3, 2, 2]


def test_knn_count_scores_hand_computed():
    scores = _knn("count").scores(torch.tensor([[0, 4, 5], [0, 0, 5], [0, 0, 0]]))
    # Sums of co-occurrence rows plus 0.5 * popularity / 3.
    assert scores[0].tolist() == pytest.approx([3.5, 2 + 1 / 3, 1 + 1 / 3])
    assert scores[1].tolist() == pytest.approx([1.5, 1 + 1 / 3, 1 + 1 / 3])
    assert scores[2].tolist() == pytest.approx([0.5, 1 / 3, 1 / 3])  # no source items: popularity


def test_knn_cosine_similarity_hand_computed():
    knn = _knn("cosine")
    sim = knn.similarity(torch.tensor([[4, 5], [0, 5]]))
    # Source users (2, 2, 1), target users (3, 2, 2): weight = cooc / sqrt(users_s * users_t).
    s6, half = 1 / np.sqrt(6), 0.5
    assert sim[0].tolist() == pytest.approx([3 * s6, 2 * half, half])
    assert sim[1].tolist() == pytest.approx([s6, half, half])


def test_knn_cosine_scores_keep_order_and_break_ties_by_popularity():
    knn = _knn("cosine")
    scores = knn.scores(torch.tensor([[4, 5], [0, 5], [0, 0]]))
    assert scores.dtype == torch.float32
    assert scores[0].argsort(descending=True).tolist() == [0, 1, 2]
    # User {5}: target 0 has the lowest cosine; targets 1 and 2 tie in cosine and popularity and stay tied.
    assert scores[1, 0] < scores[1, 1] == scores[1, 2]
    # Empty source history: the popularity ranking (target 0 first).
    assert scores[2, 0] > scores[2, 1] == scores[2, 2]


def test_knn_cosine_tie_break_never_outranks_a_similarity_difference():
    # Source item 4 co-occurs with target 0 for 4 users and with target 1 for 5; 2 more users click target 1.
    # Cosine: 4 / sqrt(9 * 4) = 0.667 > 5 / sqrt(9 * 7) = 0.630, although target 1 is more popular (7 vs 4).
    source = [np.array([4])] * 9 + [np.array([0])] * 2
    target = [np.array([4])] * 4 + [np.array([5])] * 7
    knn = CooccurrenceKNNScorer(source, target, 1, 2)
    np.testing.assert_allclose(knn.similarity(torch.tensor([[4]]))[0], [4 / 6, 5 / np.sqrt(63)])
    assert knn.scores(torch.tensor([[4]]))[0].tolist() == [1.0, 0.0]
    # Plain counts (4 vs 5) rank the other way.
    counts = CooccurrenceKNNScorer(source, target, 1, 2, normalization="count").scores(torch.tensor([[4]]))
    assert counts[0, 1] > counts[0, 0]


def test_knn_rejects_mismatched_users():
    with pytest.raises(ValueError, match="one sequence per training user"):
        CooccurrenceKNNScorer(SOURCE, TARGET[:-1], 3, 3)
    with pytest.raises(ValueError, match="normalization"):
        CooccurrenceKNNScorer(SOURCE, TARGET, 3, 3, normalization="jaccard")


def test_majority_class_prior():
    probs = majority_class(np.array([1, 1, 0, 2]), n_test=3, num_classes=4)
    assert probs.shape == (3, 4)
    assert probs[0].tolist() == pytest.approx([0.25, 0.5, 0.25, 0.0])
    assert probs.argmax(axis=1).tolist() == [1, 1, 1]


def test_bag_of_items_logistic_separates_item_sets():
    train = [np.array([4, 5])] * 6 + [np.array([6, 7])] * 6
    labels = np.array([0] * 6 + [1] * 6)
    test = [np.array([4]), np.array([0, 7]), np.array([4, 4, 4, 5]), np.array([4, 5])]
    probs = bag_of_items_logistic(train, labels, test, num_items=4, num_classes=3)
    assert probs.shape == (4, 3)
    assert probs.argmax(axis=1).tolist()[:2] == [0, 1]
    assert probs[:, 2].tolist() == [0.0] * 4  # a class absent from training gets probability 0
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[2], probs[3])  # features are the set of items: repeats do not count


def test_balanced_class_weight_lifts_the_minority_class():
    # Item 4 alone: 30 class-0 users and all 10 class-1 users. Unweighted it leans to class 0 (p1 0.25);
    # balanced (n / (K * n_class), as task.class_weights), 10 class-1 users weigh as much as 40 class-0 users
    # and it leans to class 1 (p1 0.57).
    train = [np.array([4])] * 30 + [np.array([4, 5])] * 10 + [np.array([4])] * 10
    labels = np.array([0] * 30 + [0] * 10 + [1] * 10)
    test = [np.array([4])]
    plain = bag_of_items_logistic(train, labels, test, num_items=2, C=100.0)
    balanced = bag_of_items_logistic(train, labels, test, num_items=2, C=100.0, class_weight="balanced")
    assert plain[0, 1] < 0.3 < balanced[0, 1]
    assert balanced[0, 1] > plain[0, 1] + 0.2


def test_bag_of_items_features_are_l2_normalised_sets():
    from peterrec.evaluation.baselines import _bag_of_items

    x = _bag_of_items([np.array([4, 5, 5, 6, 7]), np.array([0, 0, 6])], num_items=4, what="test").toarray()
    np.testing.assert_allclose(x[0], [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(x[1], [0.0, 0.0, 1.0, 0.0])
