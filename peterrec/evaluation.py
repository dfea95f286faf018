"""Full-ranking evaluation, separate from training: a scorer maps histories to scores over all items.

Protocol (DESIGN.md): every real item is ranked, the user's earlier items are excluded (the target itself
never is), ties count against the model. Sampled protocols live beside it and are labelled as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from peterrec import NUM_SPECIAL_TOKENS, PAD
from peterrec.data.sequences import left_pad
from peterrec.metrics import history_columns, ranking_metrics, target_ranks

Scorer = Callable[[torch.Tensor], torch.Tensor]
DEFAULT_KS = (5, 10, 20)


def pad_histories(histories: Sequence[np.ndarray]) -> np.ndarray:
    """Left-pad variable-length histories to the longest one."""
    longest = max((len(h) for h in histories), default=1)
    return left_pad(list(histories), max(1, longest), pad=PAD)


@torch.inference_mode()
def rank_targets(
    scorer: Scorer,
    histories: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    exclude_history: bool = True,
) -> np.ndarray:
    """0-based rank of each target item id among all real items, batch by batch."""
    ranks = []
    for start in range(0, len(targets), batch_size):
        hist = torch.as_tensor(histories[start : start + batch_size], device=device)
        cols = torch.as_tensor(targets[start : start + batch_size], device=device) - NUM_SPECIAL_TOKENS
        scores = scorer(hist).float()
        exclude = history_columns(hist, scores.shape[1]) if exclude_history else None
        ranks.append(target_ranks(scores, cols, exclude).cpu())
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def evaluate_ranking(
    scorer: Scorer,
    histories: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    ks: Sequence[int] = DEFAULT_KS,
    exclude_history: bool = True,
    prefix: str = "",
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics (keys ``{prefix}hr@10`` ...) and the per-example ranks."""
    ranks = rank_targets(
        scorer,
        histories,
        targets,
        batch_size=batch_size,
        device=torch.device(device),
        exclude_history=exclude_history,
    )
    metrics = ranking_metrics(torch.as_tensor(ranks), ks=ks)
    return {f"{prefix}{k}": v for k, v in metrics.items()}, ranks
