"""Same-domain next-item finetuning (warm start): the pretraining objective on new sequences.

The head is the pretrained item softmax layer (``NextItemHead``), so ``fine_cls`` retrains only that
layer and ``peterrec`` trains patches plus that layer. Evaluation is the pretraining protocol:
leave-last-out per user, full ranking over all items, history excluded.
"""

from __future__ import annotations

import copy

import torch

from peterrec import PAD
from peterrec.config import FinetuneConfig
from peterrec.data import Vocabulary, left_pad
from peterrec.heads import NextItemHead
from peterrec.metrics import per_user_ranking_metrics
from peterrec.nextitem_data import load_next_item_data, make_windows
from peterrec.objectives import autoregressive_batch, full_softmax_loss, mask_batch
from peterrec.pretrain import NextItemModel, baseline_metrics, evaluate_next_item


class NextItemTask:
    """Examples are training windows; batches and metrics follow the pretraining pipeline."""

    kind = "nextitem"

    def __init__(self, config: FinetuneConfig, vocab: Vocabulary, output_layer, causal: bool):
        self.config = config
        self.data = load_next_item_data(config.data, vocab=vocab)
        self.output_layer = output_layer
        self.causal = causal
        self.width = config.data.max_len + (1 if causal else 0)
        self.windows = make_windows(self.data.train, self.width, config.data.path)
        self.batch_size = config.train.batch_size

    def __len__(self) -> int:
        return len(self.windows)

    def make_head(self, channels: int) -> NextItemHead:
        return NextItemHead(copy.deepcopy(self.output_layer))

    def scoring_model(self, model) -> NextItemModel:
        return NextItemModel(model.backbone, model.head.output, self.config.data.max_len)

    def step_loss(self, model, indices, generator, device) -> tuple[torch.Tensor, int]:
        seqs = torch.from_numpy(left_pad([self.windows[i] for i in indices], self.width, pad=PAD))
        if self.causal:
            inputs, targets = autoregressive_batch(seqs)
        else:
            inputs, targets = mask_batch(seqs, self.data.num_items, generator)
        inputs, targets = inputs.to(device), targets.to(device)
        loss = full_softmax_loss(model.head.output, model.backbone(inputs), targets)
        return loss, int((inputs != PAD).sum())

    def evaluate(self, model, split: str, device, batch_size: int = 256) -> tuple[dict, dict]:
        scorer = self.scoring_model(model)
        metrics, ranks = evaluate_next_item(scorer, self.data, split, batch_size, device)
        return metrics, per_user_ranking_metrics(ranks)

    def baselines(self) -> dict[str, dict[str, float]]:
        return baseline_metrics(self.data, 256)

    def describe(self) -> dict:
        return {"users": len(self.data.users), "windows": len(self.windows), **self.data.stats()}
