"""User profile prediction: a categorical label (gender, age bucket, occupation, ...) from clicks."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from peterrec.choices import EVAL_SPLITS
from peterrec.config import FinetuneConfig
from peterrec.data import check_users_have_sequences, read_labels
from peterrec.evaluation.baselines import bag_of_items_logistic, majority_class, vector_logistic
from peterrec.evaluation.metrics import classification_metrics, per_user_correct
from peterrec.model.heads import ClassifierHead
from peterrec.model.transfer import TransferModel
from peterrec.tasks.base import (
    SupervisedTask,
    UserSplit,
    encode_sources,
    input_matrix,
    model_batch,
    split_task_users,
    transfer_model,
)


class ProfileTask(SupervisedTask):
    """Labels for some users; every labelled user with a source sequence is one example."""

    kind = "profile"
    default_monitor = "valid/accuracy"
    baseline_names = ("majority", "bag_of_items_lr", "linear_probe", "mean_item_embedding_lr")

    def __init__(self, config: FinetuneConfig, base):
        task = config.task
        labels = read_labels(task.labels, user_column=task.label_user_column, label_column=task.label_column)
        sequences = encode_sources(config, base, set(labels))
        labels, self.skipped_users = check_users_have_sequences(labels, sequences, task.labels)
        self.classes = sorted(set(labels.values()))
        self.head_dropout = task.head_dropout
        self.num_source_items = len(base.vocab)
        index = {c: i for i, c in enumerate(self.classes)}
        splits = {}
        for name, users in split_task_users(list(labels), config).items():
            seqs = [sequences[u] for u in users]
            splits[name] = UserSplit(
                users=users,
                inputs=input_matrix(seqs, config.data.max_len, task.history),
                rows=np.arange(len(users)),
                targets=np.array([index[labels[u]] for u in users], dtype=np.int64),
                sequences=seqs,
            )
        self.class_weights = None
        if task.class_weights == "balanced":  # n / (K * n_class) over training users; absent class: 0
            counts = np.bincount(splits["train"].targets, minlength=len(self.classes)).astype(np.float64)
            balanced = np.where(counts > 0, counts.sum() / (len(self.classes) * np.maximum(counts, 1)), 0.0)
            self.class_weights = torch.as_tensor(balanced, dtype=torch.float32)
        # The linear probe reads frozen user vectors; its model is built now, so a pooling the backbone
        # cannot use is refused before anything runs.
        probe_strategy = dataclasses.replace(config.strategy, train_cls=False)
        self.probe = transfer_model(base.backbone, torch.nn.Identity(), probe_strategy)
        super().__init__(splits, config.train.batch_size, config.task.click_dropout)

    @property
    def baseline_class_weight(self) -> str | None:
        """sklearn's ``class_weight`` for the logistic-regression baselines: ``"balanced"`` (the same
        n / (K * n_class)) when the neural models weigh classes, so macro-F1 compares like with like."""
        return None if self.class_weights is None else "balanced"

    @functools.cached_property
    def probe_features(self) -> dict[str, dict[str, np.ndarray]]:
        """The transfer baselines' features, computed on first use from the backbone as it is then."""
        return pretrained_features(self.probe, self.splits)

    def make_head(self, base) -> ClassifierHead:
        return ClassifierHead(base.backbone.channels, len(self.classes), dropout=self.head_dropout)

    def example_loss(self, model, inputs, targets, generator) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(inputs.device)
        return F.cross_entropy(model(inputs), targets, weight=weight)

    @torch.inference_mode()
    def predict_proba(self, model, inputs: np.ndarray, device, batch_size: int = 256) -> np.ndarray:
        model.eval()
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = model_batch(inputs[start : start + batch_size], device)
            out.append(torch.softmax(model(batch).float(), dim=-1).cpu())
        return torch.cat(out).numpy()

    def _metrics(self, probs: np.ndarray, split: str) -> dict[str, float]:
        labels = self.splits[split].targets
        values = classification_metrics(probs, labels)
        return {f"{split}/{k}": float(v) for k, v in values.items()}

    def evaluate(self, model, split: str, device, batch_size: int = 256) -> tuple[dict, dict]:
        probs = self.predict_proba(model, self.splits[split].inputs, device, batch_size)
        return self._metrics(probs, split), self.per_user(probs, split)

    def per_user(self, probs: np.ndarray, split: str) -> dict:
        """What a run keeps per test user: the user, the label, the class probabilities and correctness;
        enough to pool cross-validation folds and bootstrap AUC or macro-F1 over users."""
        part = self.splits[split]
        return {
            "users": list(part.users),
            "labels": part.targets,
            "probabilities": probs.round(6),
            "accuracy": per_user_correct(probs, part.targets),
        }

    def baselines(self) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
        """Majority class and bag-of-items LR, and two transfer baselines on the pretrained model: a linear
        probe on frozen user vectors and LR on the mean pretrained item embedding of the whole history.
        Returns their metrics and their per-user test outputs (as :meth:`per_user`).

        The transfer baselines read the backbone as it is: call this before training changes it (the
        finetune command does).
        """
        rows, test_outputs = {}, {}
        for name in self.baseline_names:
            probs = {split: self.baseline_probabilities(name, split) for split in EVAL_SPLITS}
            rows[name] = {}
            for split in EVAL_SPLITS:
                rows[name].update(self._metrics(probs[split], split))
            per_user = self.per_user(probs["test"], "test")
            test_outputs[name] = {k: v for k, v in per_user.items() if k != "users"}
        return rows, test_outputs

    def baseline_probabilities(self, name: str, split: str) -> np.ndarray:
        """(users of ``split``, K) class probabilities of one baseline trained on the training users."""
        train, part, k = self.splits["train"], self.splits[split], len(self.classes)
        if name == "majority":
            return majority_class(train.targets, len(part), k)
        if name == "bag_of_items_lr":
            return bag_of_items_logistic(
                train.sequences,
                train.targets,
                part.sequences,
                self.num_source_items,
                num_classes=k,
                class_weight=self.baseline_class_weight,
            )
        features = self.probe_features[name]
        return vector_logistic(
            features["train"], train.targets, features[split], k, class_weight=self.baseline_class_weight
        )

    def describe(self) -> dict:
        return {**super().describe(), "classes": self.classes, "skipped_users": self.skipped_users}

    @classmethod
    def main_metric(cls, columns: list[str]) -> tuple[str, str]:
        """ROC-AUC for two classes, else macro-F1: accuracy rewards the majority class under imbalance."""
        return ("test/auc", "auc") if "test/auc" in columns else ("test/macro_f1", "macro_f1")

    @classmethod
    def protocol(cls, info: dict) -> str:
        return "classification of held-out users"

    @classmethod
    def load_head(cls, info: dict, base, extras: dict | None = None) -> ClassifierHead:
        return ClassifierHead(base.backbone.channels, len(info["classes"]))

    @classmethod
    def recommend(cls, run, users: list[str], inputs: torch.Tensor, top_k: int) -> Iterator[dict]:
        """Label probabilities per user (``top_k`` does not apply: every class is listed)."""
        probs = torch.softmax(run.model(inputs), dim=-1)
        classes = run.manifest.task["classes"]
        for user, row in zip(users, probs.tolist(), strict=True):
            yield {"user": user, "probabilities": dict(zip(classes, row, strict=True))}


@torch.inference_mode()
def pretrained_features(probe: TransferModel, splits: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per split: the user vectors of ``probe`` (a frozen backbone, the configured pooling, no head), and the
    mean of the backbone's input item vectors over each user's whole history."""
    probe.eval()
    device = next(probe.backbone.parameters()).device
    encoder = probe.backbone.item_encoder
    vectors, mean_items = {}, {}
    for name, part in splits.items():
        batches = [
            probe(model_batch(part.inputs[i : i + 256], device)) for i in range(0, len(part.inputs), 256)
        ]
        vectors[name] = torch.cat(batches).float().cpu().numpy()
        items = [encoder.item_vectors(torch.as_tensor(s, device=device)).mean(0) for s in part.sequences]
        mean_items[name] = torch.stack(items).float().cpu().numpy()
    return {"linear_probe": vectors, "mean_item_embedding_lr": mean_items}
