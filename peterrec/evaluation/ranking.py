"""Full-ranking evaluation, separate from training: a scorer maps histories to scores over all items.

Protocol (docs/protocols.md): every real item is ranked, the user's earlier items are excluded (the
target itself never is), ties count against the model.
Sampled protocols live beside it and are labelled as such.

Histories are either a left-padded matrix (one row per user) or ragged
:class:`~peterrec.data.next_item.Histories`. Ragged histories never become a users x longest-history
matrix: each batch's model input is its rows' last ``input_len`` items, and the history exclusions are a
sparse (row, column) list, so an evaluation batch's memory is ``batch x (items + input_len)`` plus the
batch's clicks, whatever the longest history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from peterrec.data.next_item import Histories
from peterrec.evaluation.metrics import _check_scores, history_columns, ranking_metrics, target_ranks
from peterrec.tokens import NUM_SPECIAL_TOKENS

Scorer = Callable[[torch.Tensor], torch.Tensor]
DEFAULT_KS = (5, 10, 20)
logger = logging.getLogger(__name__)


@torch.no_grad()
def sparse_target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
) -> torch.Tensor:
    """:func:`~peterrec.evaluation.metrics.target_ranks` with the exclusions as (row, column) pairs.

    ``columns`` must lie in ``[0, N)``; the target itself is never excluded.
    """
    _check_scores(scores, targets)
    targets = targets.long().to(scores.device)
    batch = torch.arange(scores.shape[0], device=scores.device)
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[rows.long().to(scores.device), columns.long().to(scores.device)] = False
    keep[batch, targets] = True
    target_score = scores[batch, targets].unsqueeze(1)
    above = ((scores > target_score) & keep).sum(dim=1)
    tied = ((scores == target_score) & keep).sum(dim=1) - 1  # minus the target itself
    return above + tied


def _sparse_exclusions(
    histories: Histories, rows: np.ndarray, num_items: int
) -> tuple[np.ndarray, np.ndarray]:
    batch_row, ids = histories.columns(rows)
    if ids.size and int(ids.max()) >= num_items + NUM_SPECIAL_TOKENS:
        raise ValueError(f"history holds item id {int(ids.max())} but num_items is {num_items}")
    real = ids >= NUM_SPECIAL_TOKENS
    return batch_row[real], ids[real] - NUM_SPECIAL_TOKENS


@torch.inference_mode()
def rank_targets(
    scorer: Scorer,
    histories: np.ndarray | Histories,
    targets: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    exclude_history: bool = True,
    input_len: int | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """0-based rank of each target item id among all real items, batch by batch.

    Ragged ``histories``: the scorer gets each row's last ``min(input_len, longest history)`` items
    (``input_len`` None: whole histories), left-padded, which is what a padded matrix gives a model that
    reads its last ``input_len`` positions. ``rows``: rank only these rows (a sample), in this order.
    """
    ranks = []
    ragged = isinstance(histories, Histories)
    chosen = np.arange(len(targets)) if rows is None else np.asarray(rows, dtype=np.int64)
    if ragged:
        longest = max(1, histories.longest)
        width = longest if input_len is None else max(1, min(input_len, longest))
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start : start + batch_size]
        cols = torch.as_tensor(targets[batch], device=device) - NUM_SPECIAL_TOKENS
        if not ragged:
            hist = torch.as_tensor(histories[batch], device=device)
            scores = scorer(hist).float()
            exclude = history_columns(hist, scores.shape[1]) if exclude_history else None
            ranks.append(target_ranks(scores, cols, exclude).cpu())
            continue
        scores = scorer(torch.as_tensor(histories.tails(batch, width), device=device)).float()
        if exclude_history:
            row, col = _sparse_exclusions(histories, batch, scores.shape[1])
            ranks.append(
                sparse_target_ranks(scores, cols, torch.from_numpy(row), torch.from_numpy(col)).cpu()
            )
        else:
            ranks.append(target_ranks(scores, cols).cpu())
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def sample_rows(count: int, sample: int | None, seed: int = 0) -> np.ndarray | None:
    """Sorted indices of ``sample`` of ``count`` rows (seeded), or None for all of them."""
    if sample is None or sample >= count:
        return None
    if sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    return np.sort(np.random.default_rng(seed).choice(count, size=sample, replace=False))


def evaluate_ranking(
    scorer: Scorer,
    histories: np.ndarray | Histories,
    targets: np.ndarray,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    ks: Sequence[int] = DEFAULT_KS,
    exclude_history: bool = True,
    prefix: str = "",
    input_len: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics (keys ``{prefix}hr@10`` ...) and the per-example ranks.

    ``sample``: rank a seeded random sample of that many users (sorted by index) instead of all of them.
    Its metrics are labelled: keys ``{prefix}sample{n}/hr@10`` ..., and the ranks are the sample's.
    """
    rows = sample_rows(len(targets), sample, seed)
    ranks = rank_targets(
        scorer,
        histories,
        targets,
        batch_size=batch_size,
        device=torch.device(device),
        exclude_history=exclude_history,
        input_len=input_len,
        rows=rows,
    )
    metrics = ranking_metrics(torch.as_tensor(ranks), ks=ks)
    if rows is not None:
        logger.info("ranking metrics on a sample of %d of %d users (seed %d)", len(rows), len(targets), seed)
        prefix = f"{prefix}sample{len(rows)}/"
    return {f"{prefix}{k}": v for k, v in metrics.items()}, ranks
