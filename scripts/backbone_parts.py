"""Which part of a pretrained backbone a transfer result rests on: write backbones with one part replaced.

Usage: python scripts/backbone_parts.py BACKBONE_DIR OUT_DIR [SEED] [TASKS_DIR]   (docs/results.md)

Writes three backbone runs under OUT_DIR, each loadable by ``peterrec finetune`` / ``compare --backbone``:

- ``random-items``: the pretrained convolution stack with the item table ``peter_zero`` draws for SEED;
- ``random-stack``: the pretrained item table with the stack ``peter_zero`` draws for SEED;
- ``scaled-items``: everything pretrained, the item table multiplied by one factor so that its standard
  deviation over the real items equals that of the fresh table;
- with TASKS_DIR (``peterrec data movielens``'s output), ``svd-items`` and ``svd-items-random-stack``: the
  item table replaced by the top right singular vectors of the users x items click matrix (rows L2-normalised,
  as bag-of-items LR reads them; each vector times sqrt(singular value)), at the fresh table's standard
  deviation, under the pretrained and under the random stack. No labels are used: it is the table a
  user-level, taste-shaped pretraining would aim for, and a linear probe reads gender and age from it
  almost as well as bag-of-items LR does (docs/results.md).

Finetuning ``peterrec`` on each and comparing with ``peterrec`` (all pretrained) and ``peter_zero`` (all
random) splits the gap between the two into the item table's share and the stack's. The random parts are drawn
exactly as ``apply_strategy`` draws them for ``peter_zero`` (``torch.manual_seed(SEED)``, then a fresh
backbone), so ``random-items`` plus ``random-stack`` cover the same weights as ``peter_zero`` with that seed.
Each output carries the source's config and vocabulary and a manifest with its own weights' sha256.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from peterrec.checkpoint import sha256_file
from peterrec.runs import load_backbone

WEIGHTS = "backbone.safetensors"
ITEM_TABLE = "backbone.item_encoder.embedding.weight"
SPECIAL_TOKENS = 4  # [PAD], [MASK], [CLS], [UNK] come before the items in the table
Weights = dict[str, torch.Tensor]


def fresh_backbone_weights(backbone_dir: Path, seed: int) -> Weights:
    """The backbone tensors ``peter_zero`` would use with ``seed``, under the weights file's names."""
    base = load_backbone(backbone_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = base.model.backbone.fresh().state_dict()
    return {f"backbone.{name}": tensor for name, tensor in fresh.items()}


def random_items(pretrained: Weights, fresh: Weights) -> Weights:
    return {**pretrained, ITEM_TABLE: fresh[ITEM_TABLE]}


def random_stack(pretrained: Weights, fresh: Weights) -> Weights:
    stack = {name: tensor for name, tensor in fresh.items() if name != ITEM_TABLE}
    return {**pretrained, **stack}


def scaled_items(pretrained: Weights, fresh: Weights) -> Weights:
    factor = fresh[ITEM_TABLE][SPECIAL_TOKENS:].std() / pretrained[ITEM_TABLE][SPECIAL_TOKENS:].std()
    return {**pretrained, ITEM_TABLE: pretrained[ITEM_TABLE] * factor}


VARIANTS: dict[str, Callable[[Weights, Weights], Weights]] = {
    "random-items": random_items,
    "random-stack": random_stack,
    "scaled-items": scaled_items,
}


def svd_item_table(tasks_dir: Path, items: list[str], like: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``like`` with its real-item rows replaced by SVD item vectors with standard deviation ``std`` (module
    doc)."""
    from item_vector_probe import click_matrix, svd_item_vectors  # the probe's own click matrix and vectors

    vectors = svd_item_vectors(click_matrix(tasks_dir, items)[0], like.shape[1])
    table = like.clone()
    table[SPECIAL_TOKENS:] = torch.from_numpy(vectors / vectors.std()).to(like.dtype) * std
    return table


def write_variant(source: Path, out: Path, weights: Weights, label: str) -> None:
    """A backbone run at ``out``: the source's config and vocabulary, ``weights``, a new manifest."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("config.yaml", "vocab.json"):
        shutil.copy(source / name, out / name)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, out / WEIGHTS)
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    manifest["sha256"][WEIGHTS] = sha256_file(out / WEIGHTS)
    manifest["name"] = f"{manifest['name']}-{label}"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    load_backbone(out)  # checks the hashes and that the weights fit the config


def main(backbone_dir: str, out_dir: str, seed: str = "0", tasks_dir: str | None = None) -> None:
    source = Path(backbone_dir)
    pretrained = load_file(source / WEIGHTS)
    fresh = fresh_backbone_weights(source, int(seed))
    variants = {label: make(pretrained, fresh) for label, make in VARIANTS.items()}
    if tasks_dir is not None:
        items = json.loads((source / "vocab.json").read_text(encoding="utf-8"))["items"]
        fresh_std = fresh[ITEM_TABLE][SPECIAL_TOKENS:].std()
        table = svd_item_table(Path(tasks_dir), items, pretrained[ITEM_TABLE], fresh_std)
        variants["svd-items"] = {**pretrained, ITEM_TABLE: table}
        variants["svd-items-random-stack"] = {**random_stack(pretrained, fresh), ITEM_TABLE: table}
    for label, weights in variants.items():
        write_variant(source, Path(out_dir) / label, weights, label)
        print(f"wrote {Path(out_dir) / label}")


if __name__ == "__main__":
    main(*sys.argv[1:])
