"""The next-item protocol (pretraining and same-domain finetuning): leave-last-out, full ranking.

The last item of every user is the test target and the second-last the validation target; every real
item is ranked, the user's earlier items are excluded, ties count against the model. Popularity and a
first-order Markov chain are scored on the same split.
"""

from __future__ import annotations

import numpy as np

from peterrec.choices import EVAL_SPLITS
from peterrec.data.next_item import Histories, NextItemData
from peterrec.evaluation.baselines import MarkovScorer, PopularityScorer
from peterrec.evaluation.ranking import Scorer, evaluate_ranking

NEXT_ITEM_BASELINES = {"popularity": PopularityScorer, "markov": MarkovScorer}


def split_arrays(data: NextItemData, split: str) -> tuple[Histories, np.ndarray]:
    """(ragged histories, target ids) of ``valid`` or ``test`` (``histories.dense()`` pads them)."""
    if split == "valid":
        return data.valid_histories, data.valid_targets
    return data.test_histories, data.test_targets


def evaluate_next_item(
    scorer: Scorer,
    data: NextItemData,
    split: str,
    batch_size: int,
    device="cpu",
    *,
    sample: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics (``{split}/hr@10`` ...) and per-user ranks of ``scorer`` (histories -> item scores).

    The scorer sees each user's last ``data.max_len`` items (all a model reads); the whole history is
    excluded from the ranking. ``sample``: a seeded sample of that many users, labelled in the keys
    (``{split}/sample{n}/hr@10`` ...).
    """
    histories, targets = split_arrays(data, split)
    return evaluate_ranking(
        scorer,
        histories,
        targets,
        batch_size=batch_size,
        device=device,
        prefix=f"{split}/",
        input_len=data.max_len,
        sample=sample,
        seed=seed,
    )


def evaluate_next_item_model(
    model, data: NextItemData, split: str, batch_size: int, device="cpu", *, sample: int | None = None
) -> dict:
    """Metrics of a :class:`~peterrec.model.next_item.NextItemModel` (set to eval mode) on ``split``."""
    model.eval()
    return evaluate_next_item(model.next_item_scores, data, split, batch_size, device, sample=sample)[0]


def next_item_baselines(data: NextItemData, batch_size: int) -> dict[str, dict[str, float]]:
    """Popularity and first-order Markov on the same split and protocol as the model."""
    return next_item_baseline_ranks(data, batch_size)[0]


def next_item_baseline_ranks(
    data: NextItemData, batch_size: int
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """:func:`next_item_baselines`, plus each baseline's per-user test ranks."""
    rows, test_ranks = {}, {}
    for name, scorer_class in NEXT_ITEM_BASELINES.items():
        scorer = scorer_class(data.train, data.num_items)
        rows[name] = {}
        for split in EVAL_SPLITS:
            metrics, ranks = evaluate_next_item(scorer.scores, data, split, batch_size)
            rows[name].update(metrics)
        test_ranks[name] = ranks  # EVAL_SPLITS ends with test
    return rows, test_ranks


__all__ = [
    "evaluate_next_item",
    "evaluate_next_item_model",
    "next_item_baseline_ranks",
    "next_item_baselines",
    "split_arrays",
]
