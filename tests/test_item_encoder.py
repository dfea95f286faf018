"""The item-encoder interface: ID tables are one implementation; a second one trains through the same
pretrain and cold-start paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, SAMPLE_CONFIG, TINY_OVERRIDES
from torch import nn

from peterrec.commands.evaluate import evaluate_run
from peterrec.commands.finetune import run_finetune
from peterrec.commands.pretrain import run_pretrain
from peterrec.config import FinetuneConfig, PretrainConfig, load_config
from peterrec.data import Vocabulary
from peterrec.manifest import read_manifest
from peterrec.model.backbone import NextItNet
from peterrec.model.item_encoder import ITEM_ENCODERS, IdItemEncoder, ItemEncoder, register_item_encoder
from peterrec.runs import load_backbone, load_run
from peterrec.tokens import CLS, PAD, UNK

DIM = 12


class ProjectedScores(nn.Module):
    """Scores items by their projected vectors; the encoder is referenced, not owned (no shared tensors)."""

    def __init__(self, vectors: torch.Tensor, projection: nn.Module):
        super().__init__()
        self.num_items = len(vectors)
        self.register_buffer("vectors", vectors)
        self._projection = [projection]
        self.bias = nn.Parameter(torch.zeros(self.num_items))

    def item_matrix(self) -> torch.Tensor:
        return self._projection[0](self.vectors)

    def forward(self, hidden):
        return F.linear(hidden, self.item_matrix(), self.bias)

    def logits_for(self, hidden, columns):
        weight, bias = self.item_matrix()[columns], self.bias[columns]
        return (
            F.linear(hidden, weight, bias)
            if columns.dim() == 1
            else torch.einsum("nc,nsc->ns", hidden, weight) + bias
        )


class RandomVectorEncoder(ItemEncoder):
    """Fixed random vectors per item (a buffer, saved with the run) through a trainable projection."""

    def __init__(self, num_items: int, channels: int, sparse: bool = False):
        super().__init__()
        self.num_items, self.channels = num_items, channels
        generator = torch.Generator().manual_seed(num_items)
        self.register_buffer("vectors", torch.randn(num_items + 4, DIM, generator=generator))
        self.projection = nn.Linear(DIM, channels)

    def item_vectors(self, ids):
        return self.projection(self.vectors[ids])

    def make_output(self):
        return ProjectedScores(self.vectors[4:].clone(), self.projection)

    def make_target_head(self, num_target_items: int):
        generator = torch.Generator().manual_seed(10_000 + num_target_items)
        return TargetVectors(torch.randn(num_target_items, DIM, generator=generator), self.channels)

    def fresh(self):
        return RandomVectorEncoder(self.num_items, self.channels)


class TargetVectors(ProjectedScores):
    """Cold-start head: fixed random vectors of the target items through a projection of its own."""

    def __init__(self, vectors: torch.Tensor, channels: int):
        projection = nn.Linear(DIM, channels)
        super().__init__(vectors, projection)
        self.projection = projection  # owned here, so it trains with the head


@pytest.fixture
def random_vectors():
    register_item_encoder("random_vectors", RandomVectorEncoder)
    yield RandomVectorEncoder
    ITEM_ENCODERS.pop("random_vectors")


def test_id_encoder_is_the_default_and_owns_the_special_rows():
    torch.manual_seed(0)
    backbone = NextItNet(20, channels=8, dilations=(1,))
    encoder = backbone.item_encoder
    assert isinstance(encoder, IdItemEncoder) and encoder.embedding.num_embeddings == 24
    ids = torch.tensor([[PAD, 5, CLS]])
    cls = torch.full((8,), 3.0)
    assert torch.equal(encoder(ids, cls)[0, 2], cls) and torch.equal(encoder(ids)[0, 2], encoder.cls_row())
    assert encoder.padding_mask(ids, torch.float32).squeeze(-1).tolist() == [[0.0, 1.0, 1.0]]
    assert encoder.padding_mask(ids[:, 1:], torch.float32) is None
    vocab = Vocabulary.build([["a", "b"]])
    assert encoder.encode(vocab, ["a", "zzz"]).tolist() == [vocab.encode(["a"])[0], UNK]
    assert encoder.make_output().weight.shape == (20, 8) and encoder.make_target_head(7).bias.shape == (7,)


def test_backbone_refuses_an_encoder_of_another_shape():
    with pytest.raises(ValueError, match="item_encoder has 5 items"):
        NextItNet(6, channels=8, item_encoder=IdItemEncoder(5, 8))


def test_a_second_encoder_trains_through_pretrain_and_coldrec(random_vectors, tmp_path, one_thread):
    overrides = [*TINY_OVERRIDES, "train.epochs=1", "model.item_encoder=random_vectors"]
    config = load_config(PretrainConfig, SAMPLE_CONFIG, overrides)
    config.data.path = str(REPO_ROOT / "data" / "sample" / "source.csv")
    backbone_dir = run_pretrain(config, out=tmp_path / "backbone")
    manifest = read_manifest(backbone_dir)
    # it learned: well above a random ranking's expected NDCG@10 over the sample's items
    random_ndcg = sum(1 / math.log2(r + 2) for r in range(10)) / manifest.num_items
    assert manifest.metrics["test/ndcg@10"] > 1.5 * random_ndcg

    base = load_backbone(backbone_dir)
    assert isinstance(base.backbone.item_encoder, RandomVectorEncoder)
    assert evaluate_run(backbone_dir, "test") == {
        k: v for k, v in manifest.metrics.items() if k.startswith("test/")
    }

    finetune = load_config(
        FinetuneConfig,
        REPO_ROOT / "configs" / "finetune" / "sample_coldrec.yaml",
        [
            f"data.path={REPO_ROOT / 'data' / 'sample' / 'source.csv'}",
            f"task.target={REPO_ROOT / 'data' / 'sample' / 'target.csv'}",
            "data.max_len=16",
            "train.epochs=2",
            "train.progress=false",
            "train.device=cpu",
        ],
    )
    run_dir = run_finetune(finetune, backbone_dir, strategy="peterrec", out=tmp_path / "coldrec")
    run = load_run(run_dir)
    assert isinstance(run.model.head, TargetVectors)
    trained = {n for n, p in run.model.named_parameters() if p.requires_grad}
    assert {"head.projection.weight", "head.bias"} <= trained
    assert not any(n.startswith("backbone.item_encoder") for n in trained)  # frozen with the backbone
    finetuned = read_manifest(run_dir)
    assert finetuned.metrics["test/ndcg@10"] > 0
    assert evaluate_run(run_dir, "test") == {
        k: v for k, v in finetuned.metrics.items() if k.startswith("test/")
    }
