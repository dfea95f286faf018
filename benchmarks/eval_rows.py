"""Row 5: full-ranking evaluation throughput (users/s) with ``peterrec.evaluation.rank_targets``.

Each user has a left-padded history of 5..L real items; the scorer runs the causal backbone, reads the last
position and scores every item with the full-softmax layer; ``rank_targets`` then excludes the history
(``history_columns`` + ``target_ranks``, ties against the model). Users/s covers all of it.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import Sizes, timed
from peterrec import NUM_SPECIAL_TOKENS, PAD
from peterrec.evaluation.ranking import rank_targets
from peterrec.model.backbone import NextItNet
from peterrec.model.item_encoder import ItemOutput


def _histories(sizes: Sizes, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    high = vocab + NUM_SPECIAL_TOKENS
    histories = rng.integers(NUM_SPECIAL_TOKENS, high, size=(sizes.eval_users, sizes.length))
    lengths = rng.integers(min(5, sizes.length), sizes.length + 1, size=sizes.eval_users)
    histories[np.arange(sizes.length)[None, :] < (sizes.length - lengths)[:, None]] = PAD
    targets = rng.integers(NUM_SPECIAL_TOKENS, high, size=sizes.eval_users)
    return histories, targets


def _ranking_run(sizes: Sizes, vocab: int, channels: int):
    torch.manual_seed(0)
    backbone = NextItNet(vocab, channels, sizes.dilations, sizes.kernel_size, causal=True).eval()
    output = ItemOutput(vocab, channels).eval()
    device = torch.device(sizes.device)
    backbone.to(device)
    output.to(device)
    histories, targets = _histories(sizes, vocab)

    def scorer(hist: torch.Tensor) -> torch.Tensor:
        return output(backbone(hist)[:, -1])

    def run() -> None:
        rank_targets(scorer, histories, targets, batch_size=sizes.eval_batch, device=device)

    return run


def eval_rows(sizes: Sizes) -> list[dict]:
    rows = []
    channels = sizes.channels[0]
    for vocab in sizes.eval_vocabs:
        run = _ranking_run(sizes, vocab, channels)
        seconds = timed(run, warmup=1, repeats=max(3, sizes.repeats // 3), device=sizes.device)
        rows.append(
            {
                "row": "5. full-ranking eval",
                "config": f"V={vocab:,}, C={channels}, {sizes.eval_users} users, batch {sizes.eval_batch}",
                "measure": "users/s",
                "value": round(sizes.eval_users / seconds, 1),
                "ratio": "",
                "note": "scores + target_ranks, history excluded",
            }
        )
    return rows
