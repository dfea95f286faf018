"""Same-domain next-item finetuning (warm start): the pretraining objective on new sequences.

The head is the pretrained item softmax layer (``NextItemHead``), so ``fine_cls`` retrains only that
layer and ``peterrec`` trains patches plus that layer. Evaluation is the pretraining protocol:
leave-last-out per user, full ranking over all items, history excluded. The class methods also serve
pretraining runs, whose use (``recommend``, ``embed``) is next-item prediction too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch

from peterrec.config import FinetuneConfig
from peterrec.data import left_pad
from peterrec.data.next_item import load_next_item_data, make_windows
from peterrec.evaluation.metrics import history_columns, per_user_ranking_metrics
from peterrec.evaluation.next_item import NEXT_ITEM_BASELINES, evaluate_next_item, next_item_baseline_ranks
from peterrec.model.heads import NextItemHead
from peterrec.model.next_item import NextItemModel
from peterrec.tasks.base import TaskDefaults, input_matrix, top_items
from peterrec.tokens import PAD
from peterrec.training.objectives import autoregressive_batch, full_softmax_loss, mask_batch


class NextItemTask(TaskDefaults):
    """Examples are training windows; batches and metrics follow the pretraining pipeline."""

    kind = "nextitem"
    default_monitor = "valid/ndcg@10"
    baseline_names = tuple(NEXT_ITEM_BASELINES)

    def __init__(self, config: FinetuneConfig, base):
        self.config = config
        self.data = load_next_item_data(config.data, vocab=base.vocab)
        self.output_layer = base.output
        self.causal = base.backbone.causal
        self.width = config.data.max_len + (1 if self.causal else 0)
        self.windows = make_windows(self.data.train, self.width, config.data.path)
        self.batch_size = config.train.batch_size

    def __len__(self) -> int:
        return len(self.windows)

    def make_head(self, base) -> NextItemHead:
        return NextItemHead(copy.deepcopy(self.output_layer))

    def scoring_model(self, model) -> NextItemModel:
        return NextItemModel(model.backbone, model.head.output, self.config.data.max_len)

    def step_loss(self, model, indices, generator, device) -> tuple[torch.Tensor, int, int]:
        seqs = torch.from_numpy(left_pad([self.windows[i] for i in indices], self.width, pad=PAD))
        if self.causal:
            inputs, targets = autoregressive_batch(seqs)
        else:
            inputs, targets = mask_batch(seqs, self.data.num_items, generator)
        inputs, targets = inputs.to(device), targets.to(device)
        loss = full_softmax_loss(model.head.output, model.backbone(inputs), targets)
        return loss, int((inputs != PAD).sum()), int((targets != PAD).sum())

    def evaluate(self, model, split: str, device, batch_size: int = 256) -> tuple[dict, dict]:
        scorer = self.scoring_model(model).eval()
        metrics, ranks = evaluate_next_item(scorer.next_item_scores, self.data, split, batch_size, device)
        return metrics, per_user_ranking_metrics(ranks)

    def baselines(self) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
        rows, test_ranks = next_item_baseline_ranks(self.data, 256)
        return rows, {name: per_user_ranking_metrics(ranks) for name, ranks in test_ranks.items()}

    def describe(self) -> dict:
        return {
            "type": self.kind,
            "users": len(self.data.users),
            "windows": len(self.windows),
            **self.data.stats(),
        }

    @classmethod
    def protocol(cls, info: dict) -> str:
        return "full ranking over all items, history excluded (leave-last-out)"

    @classmethod
    def load_head(cls, info: dict, base, extras: dict | None = None) -> NextItemHead:
        return NextItemHead(copy.deepcopy(base.output))

    @classmethod
    def model_inputs(cls, run, encoded: list[np.ndarray]) -> torch.Tensor:
        """Whole histories (the model reads its own window of them)."""
        longest = max(len(e) for e in encoded)
        return torch.as_tensor(input_matrix(encoded, longest + 1))

    @classmethod
    def next_item_model(cls, run) -> NextItemModel:
        """The scorer of a pretraining run, or of a finetuned run with its own output layer."""
        if isinstance(run.model, NextItemModel):
            return run.model
        return NextItemModel(run.model.backbone, run.model.head.output, run.config.data.max_len)

    @classmethod
    def recommend(cls, run, users: list[str], inputs: torch.Tensor, top_k: int) -> Iterator[dict]:
        """Top-k next items per user; items already in the history are not recommended again."""
        scores = cls.next_item_model(run).next_item_scores(inputs)
        scores = exclude_columns(scores, history_columns(inputs, scores.shape[1]))
        yield from top_items(scores, run.vocab, users, top_k)

    @classmethod
    def user_vectors(cls, run, inputs: torch.Tensor) -> torch.Tensor:
        """The hidden state the next item is scored from."""
        model = cls.next_item_model(run)
        return model.backbone(model.model_input(inputs))[:, -1]


def exclude_columns(scores: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Scores with the given columns (-1: none) set to -inf, so they are never in a top-k."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    valid = columns >= 0
    rows = torch.arange(len(scores)).unsqueeze(1).expand_as(columns)
    mask[rows[valid], columns[valid]] = True
    return scores.masked_fill(mask, float("-inf"))
