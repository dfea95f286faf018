"""How much of a profile label the pretrained item vectors carry, against random vectors of the same size.

Usage: python scripts/item_vector_probe.py BACKBONE_DIR [TASKS_DIR]   (docs/results.md)

A frozen backbone reads a user through the item vectors of their clicks. This script asks whether
pretraining put label information into those vectors that a random table of the same shape lacks: for each
user it averages the vectors of every clicked item, scales the mean by sqrt(clicks) (the length scale of the
shipped configs), and fits an L2 logistic regression (C = 0.1, standardised features) with 5-fold stratified
cross-validation over all users. Rows: the pretrained input table, the pretrained output (softmax) table,
both, the click matrix's own singular vectors (a table shaped by who clicks what, without labels),
RANDOM_DRAWS Gaussian tables at the pretrained table's standard deviation, and for reference the
bag-of-items LR of the tables. Gender is scored by AUC, age by macro-F1 (class-weighted LR). These folds are
scikit-learn's, not ``task.folds``', so compare rows within this table only.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RANDOM_DRAWS = 10
SPECIAL_TOKENS = 4  # [PAD], [MASK], [CLS], [UNK] come before the items in the table


def click_matrix(tasks_dir: Path, items: list[str]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Users x items 0/1 matrix over the backbone's item order, and the label rows in the same user order."""
    with open(tasks_dir / "labels.csv", encoding="utf-8") as f:
        labels = list(csv.DictReader(f))
    row_of = {r["user_id"]: i for i, r in enumerate(labels)}
    column_of = {item: i for i, item in enumerate(items)}
    clicks = np.zeros((len(labels), len(items)))
    with open(tasks_dir / "interactions.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            clicks[row_of[r["user_id"]], column_of[r["item_id"]]] = 1
    return clicks, labels


def svd_item_vectors(clicks: np.ndarray, dim: int) -> np.ndarray:
    """(items, dim) vectors from the users x items click matrix alone (no labels).

    Rows L2-normalised as bag-of-items LR reads them; the top ``dim`` right singular vectors, each times the
    square root of its singular value.
    """
    rows = clicks / np.sqrt(clicks.sum(1, keepdims=True))
    _, singular, right = np.linalg.svd(rows, full_matrices=False)
    return right[:dim].T * np.sqrt(singular[:dim])


def cross_validated_score(features: np.ndarray, y: np.ndarray, *, scale: bool = True) -> float:
    """5-fold out-of-fold predictions of an L2 logistic regression, scored by AUC (2 classes) or macro-F1."""
    binary = len(np.unique(y)) == 2
    weights = None if binary else "balanced"
    model = LogisticRegression(C=0.1 if scale else 1.0, max_iter=3000, class_weight=weights)
    if scale:
        model = make_pipeline(StandardScaler(), model)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    probabilities = cross_val_predict(model, features, y, cv=folds, method="predict_proba")
    if binary:
        return float(roc_auc_score(y, probabilities[:, 1]))
    return float(f1_score(y, probabilities.argmax(1), average="macro"))


def probe(backbone_dir: Path, tasks_dir: Path, label_column: str) -> list[tuple[str, float]]:
    items = json.loads((backbone_dir / "vocab.json").read_text(encoding="utf-8"))["items"]
    weights = load_file(backbone_dir / "backbone.safetensors")
    table = weights["backbone.item_encoder.embedding.weight"][SPECIAL_TOKENS:]
    output_table = weights["output.weight"]
    clicks, labels = click_matrix(tasks_dir, items)
    _, y = np.unique([r[label_column] for r in labels], return_inverse=True)
    scaled_sum = clicks / np.sqrt(clicks.sum(1, keepdims=True))  # mean x sqrt(n), as the length scale
    svd_vectors = svd_item_vectors(clicks, table.shape[1])
    rows = [
        ("bag of items (L2-normalised, LR C=1)", cross_validated_score(scaled_sum, y, scale=False)),
        ("pretrained input table", cross_validated_score(scaled_sum @ table, y)),
        ("pretrained output table", cross_validated_score(scaled_sum @ output_table, y)),
        ("both tables", cross_validated_score(np.hstack([scaled_sum @ table, scaled_sum @ output_table]), y)),
        ("SVD of the click matrix (no labels)", cross_validated_score(scaled_sum @ svd_vectors, y)),
    ]
    draws = [
        cross_validated_score(scaled_sum @ np.random.default_rng(s).normal(0, table.std(), table.shape), y)
        for s in range(RANDOM_DRAWS)
    ]
    rows.append((f"random tables, mean of {RANDOM_DRAWS} draws (min-max)", float(np.mean(draws))))
    rows.append(("  min", min(draws)))
    rows.append(("  max", max(draws)))
    return rows


def main(backbone_dir: str, tasks_dir: str = "data/external/ml100k-tasks") -> None:
    for label_column, metric in (("gender", "AUC"), ("age", "macro-F1")):
        print(f"\n{label_column} ({metric}, 5-fold over all users):\n")
        print(f"| item vectors | {metric} |\n|---|---|")
        for name, value in probe(Path(backbone_dir), Path(tasks_dir), label_column):
            print(f"| {name} | {value:.4f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
