"""Ranking and classification metrics: the stable import path of :mod:`peterrec.evaluation.metrics`."""

from peterrec.evaluation.metrics import *  # noqa: F403
from peterrec.evaluation.metrics import (  # noqa: F401
    classification_metrics,
    history_columns,
    hit_rate,
    mrr,
    ndcg,
    paired_bootstrap_ci,
    per_user_ranking_metrics,
    ranking_metrics,
    sampled_ranks,
    target_ranks,
)
