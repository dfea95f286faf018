"""Using runs from the command line: evaluate from weights, recommend, embed users."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from peterrec import NUM_SPECIAL_TOKENS
from peterrec.checkpoint import atomic_write_text, read_manifest
from peterrec.config import DataConfig
from peterrec.errors import DataError
from peterrec.metrics import history_columns
from peterrec.nextitem_data import load_next_item_data, read_user_sequences
from peterrec.pretrain import NextItemModel, evaluate_model
from peterrec.run import BaseRun, FinetunedRun, load_backbone, load_run
from peterrec.tasks import build_task
from peterrec.tasks.base import input_matrix


def load_any(run_dir: Path, backbone: str | None) -> BaseRun | FinetunedRun:
    """A pretrain run or a finetune run, whichever ``run_dir`` holds."""
    if read_manifest(run_dir).get("kind") == "backbone":
        return load_backbone(run_dir)
    return load_run(run_dir, backbone)


def evaluate_run(run_dir: Path, split: str, backbone: str | None = None) -> dict[str, float]:
    """Metrics recomputed from the stored weights on the run's own data and split."""
    run = load_any(run_dir, backbone)
    if isinstance(run, BaseRun):
        data = load_next_item_data(run.config.data, vocab=run.vocab)
        return evaluate_model(run.model, data, split, run.config.train.eval_batch_size, "cpu")
    task = build_task(run.config, run.base)
    return task.evaluate(run.model, split, "cpu")[0]


def user_sequences(run, user_ids: list[str], input_path: str | None) -> dict[str, list[str]]:
    """Click sequences of the requested users, from ``input_path`` or the run's own data file."""
    data: DataConfig = run.config.data
    if input_path is not None:
        data = dataclasses.replace(data, path=str(input_path), format="auto")
    sequences = read_user_sequences(data)
    if not user_ids:
        return sequences
    missing = [u for u in user_ids if u not in sequences]
    if missing:
        raise DataError(
            f"{data.path}: no clicks for user '{missing[0]}'; pick a user of that file or pass --input"
        )
    return {u: sequences[u] for u in user_ids}


def _inputs(run, sequences: dict[str, list[str]]) -> tuple[list[str], torch.Tensor]:
    vocab = run.base.vocab if isinstance(run, FinetunedRun) else run.vocab
    encoded = [vocab.encode(items) for items in sequences.values()]
    max_len = run.config.data.max_len
    if isinstance(run, FinetunedRun) and run.task_type != "nextitem":
        return list(sequences), torch.as_tensor(input_matrix(encoded, max_len))
    longest = max(len(e) for e in encoded)
    return list(sequences), torch.as_tensor(input_matrix(encoded, longest + 1))


@torch.inference_mode()
def recommend_lines(run_dir: Path, user_ids: list[str], input_path, top_k: int, backbone=None):
    """JSON lines: top-k items with scores (ranking runs) or class probabilities (profile runs)."""
    run = load_any(run_dir, backbone)
    users, inputs = _inputs(run, user_sequences(run, user_ids, input_path))
    if isinstance(run, FinetunedRun) and run.task_type == "profile":
        probs = torch.softmax(run.model(inputs), dim=-1)
        classes = run.manifest["task"]["classes"]
        for user, row in zip(users, probs.tolist(), strict=True):
            yield json.dumps({"user": user, "probabilities": dict(zip(classes, row, strict=True))})
        return
    if isinstance(run, FinetunedRun) and run.task_type == "coldrec":
        scores, vocab = run.model(inputs), run.target_vocab
    else:
        scores = next_item_model(run).next_item_scores(inputs)
        vocab = run.vocab if isinstance(run, BaseRun) else run.base.vocab
        scores = _exclude(scores, history_columns(inputs, scores.shape[1]))
    k = min(top_k, scores.shape[1])
    values, columns = scores.topk(k, dim=1)
    for user, vals, cols in zip(users, values.tolist(), columns.tolist(), strict=True):
        items = vocab.decode([c + NUM_SPECIAL_TOKENS for c in cols])
        yield json.dumps({"user": user, "items": items, "scores": [round(v, 5) for v in vals]})


def next_item_model(run: BaseRun | FinetunedRun) -> NextItemModel:
    """The next-item scorer of a pretrain run or of a finetuned ``nextitem`` run (its own output layer)."""
    if isinstance(run, BaseRun):
        return run.model
    return NextItemModel(run.model.backbone, run.model.head.output, run.config.data.max_len)


def _exclude(scores: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Already-clicked items are not recommended again."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    valid = columns >= 0
    rows = torch.arange(len(scores)).unsqueeze(1).expand_as(columns)
    mask[rows[valid], columns[valid]] = True
    return scores.masked_fill(mask, float("-inf"))


@torch.inference_mode()
def embed_users(run_dir: Path, input_path: str, out: Path, backbone=None) -> int:
    """Write (users, C) float32 representations to ``out`` and the user ids beside it."""
    run = load_any(run_dir, backbone)
    users, inputs = _inputs(run, user_sequences(run, [], input_path))
    if isinstance(run, FinetunedRun) and run.task_type != "nextitem":
        vectors = run.model.user_representation(inputs)
    else:
        model = next_item_model(run)
        vectors = model.backbone(model.model_input(inputs))[:, -1]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.float().numpy())
    atomic_write_text(out.with_suffix(".users.json"), json.dumps(users))
    return len(users)
