"""Content item encoders (``model.item_encoder: text | id+text``) end to end on tiny runs: features saved and
restored with the run, missing text, item-encoder adapters, items added after training, zero-shot cold
start, unused feature columns, the content baselines and causality."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, SAMPLE_CONFIG, TINY_OVERRIDES, set_args

from peterrec.checkpoint import load_weights
from peterrec.commands.evaluate import evaluate_run
from peterrec.commands.finetune import run_finetune
from peterrec.commands.pretrain import run_pretrain
from peterrec.config import FinetuneConfig, PretrainConfig, load_config
from peterrec.data import Vocabulary
from peterrec.errors import DataError
from peterrec.evaluation.content_baselines import ContentKNNScorer, RandomScorer
from peterrec.item_content import FEATURES_FILE, load_feature_table
from peterrec.manifest import read_manifest
from peterrec.model.adapters import adapters_of, add_adapters
from peterrec.model.backbone import NextItNet
from peterrec.model.content_encoder import ContentItemEncoder, ContentProjection, FeatureTable
from peterrec.model.next_item import build_next_item_model
from peterrec.model.transfer import TransferModel, apply_strategy
from peterrec.new_items import add_items
from peterrec.runs import load_backbone, load_run
from peterrec.tasks import build_task
from peterrec.tokens import NUM_SPECIAL_TOKENS, PAD

SAMPLE = REPO_ROOT / "data" / "sample"
ITEMS = SAMPLE / "items.csv"
COLDREC_CONFIG = REPO_ROOT / "configs" / "finetune" / "sample_coldrec.yaml"
WORD = re.compile(r"(?u)\b\w\w+\b")  # the featurizers' words (peterrec.data.item_features.TEXT_OPTIONS)
COLDREC_OVERRIDES = [
    f"data.path={SAMPLE / 'source.csv'}",
    f"task.target={SAMPLE / 'target.csv'}",
    "data.max_len=16",
    "train.epochs=1",
    "train.progress=false",
    "train.device=cpu",
]


# --- shared tiny runs (module scope: each is trained once) ---


@pytest.fixture(scope="module", autouse=True)
def one_thread_module():
    """One torch thread for the whole module: bit-exact comparisons and a 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pretrain_config(encoder: str = "text", *extra: str) -> PretrainConfig:
    overrides = [
        *TINY_OVERRIDES,
        "train.epochs=1",
        f"data.path={SAMPLE / 'source.csv'}",
        f"model.item_encoder={encoder}",
    ]
    if encoder != "id":
        overrides.append(f"model.text.items={ITEMS}")
    return load_config(PretrainConfig, SAMPLE_CONFIG, [*overrides, *extra])


def coldrec_config(*extra: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, COLDREC_CONFIG, [*COLDREC_OVERRIDES, *extra])


@pytest.fixture(scope="module")
def text_backbone(tmp_path_factory) -> Path:
    return run_pretrain(pretrain_config(), out=tmp_path_factory.mktemp("text") / "run")


@pytest.fixture(scope="module")
def coldrec_run(text_backbone, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coldrec") / "run"
    return run_finetune(coldrec_config(), text_backbone, strategy="peterrec", out=out)


def read_items() -> list[dict[str, str]]:
    with open(ITEMS, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_items(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["item_id", "title", "genres"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def text_of(item: str) -> dict[str, str]:
    return next(row for row in read_items() if row["item_id"] == item)


def histories(num_items: int, batch: int = 4, length: int = 12, seed: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    high = num_items + NUM_SPECIAL_TOKENS
    seqs = torch.randint(NUM_SPECIAL_TOKENS, high, (batch, length), generator=generator)
    seqs[0, :4] = PAD
    return seqs


def test_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith("test/")}


test_metrics.__test__ = False  # a helper, not a test


# --- 1. features deterministic and restored with the run ---


def test_text_backbone_is_deterministic_and_reloads_to_its_metrics(text_backbone, tmp_path):
    again = run_pretrain(pretrain_config(), out=tmp_path / "again")
    assert (again / FEATURES_FILE).read_bytes() == (text_backbone / FEATURES_FILE).read_bytes()
    first, second = (load_weights(run / "backbone.safetensors") for run in (text_backbone, again))
    assert first.keys() == second.keys() and "backbone.item_encoder.projection.second.weight" in first
    assert all(torch.equal(first[k], second[k]) for k in first)

    manifest = read_manifest(text_backbone)
    assert manifest.metrics["test/ndcg@10"] > 0
    base = load_backbone(text_backbone)
    assert isinstance(base.backbone.item_encoder, ContentItemEncoder)
    saved = load_feature_table(text_backbone / FEATURES_FILE)
    assert (base.content.features.to_matrix() != saved.to_matrix()).nnz == 0
    assert evaluate_run(text_backbone, "test") == test_metrics(manifest.metrics)


def test_coldrec_run_on_a_text_backbone_reloads_to_its_metrics(coldrec_run):
    manifest = read_manifest(coldrec_run)
    assert (coldrec_run / "target_item_features.safetensors").is_file()
    run = load_run(coldrec_run)
    assert run.model.head.features.num_rows == len(run.target_vocab)
    assert evaluate_run(coldrec_run, "test") == test_metrics(manifest.metrics)


# --- 2. items of the vocabulary without text ---


def test_vocabulary_items_without_text(text_backbone, tmp_path):
    vocab = Vocabulary.load(text_backbone / "vocab.json")
    dropped = vocab.items[:2]
    path = write_items(tmp_path / "items.csv", [r for r in read_items() if r["item_id"] not in dropped])
    message = rf"2 of {len(vocab)} items have no row.*{re.escape(repr(dropped[0]))}"
    with pytest.raises(DataError, match=message):
        run_pretrain(pretrain_config("text", f"model.text.items={path}"), out=tmp_path / "refused")
    assert not (tmp_path / "refused" / "manifest.json").exists()

    config = pretrain_config("text", f"model.text.items={path}", "model.text.missing=empty")
    run_dir = run_pretrain(config, out=tmp_path / "empty")
    rows = load_feature_table(run_dir / FEATURES_FILE).to_matrix()
    lengths = np.diff(rows.indptr)
    empty = {vocab.id_of(item) for item in dropped}
    assert all(lengths[i] == 0 for i in empty)
    assert all(lengths[i] > 0 for i in range(NUM_SPECIAL_TOKENS, rows.shape[0]) if i not in empty)
    assert evaluate_run(run_dir, "test") == test_metrics(read_manifest(run_dir).metrics)


# --- 3. adapters in the item encoder ---


def target_rows(base, count: int = 6) -> FeatureTable:
    targets = [row for row in read_items() if row["item_id"].startswith("t")][:count]
    texts = {row["item_id"]: f"{row['title']} {row['genres']}" for row in targets}
    return base.content.rows_for(list(texts), texts, "error", "test")


def outputs(base, model: TransferModel, seqs: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [base.backbone.item_encoder.all_item_vectors(), base.model.next_item_scores(seqs), model(seqs)]


@pytest.mark.parametrize("modules", ["item_encoder", "both"])
def test_item_encoder_adapters_are_the_identity_at_init(text_backbone, modules):
    base = load_backbone(text_backbone)
    encoder = base.backbone.item_encoder
    head = encoder.make_target_head(6, target_rows(base))
    model = TransferModel(base.backbone, head, pooling="next_item").eval()
    seqs = histories(len(base.vocab))
    before = outputs(base, model, seqs)
    torch.manual_seed(0)
    adapter = add_adapters(model, "bottleneck", modules=modules)
    assert len(encoder.adapters) == 1
    after = outputs(base, model, seqs)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    in_encoder = [n for n in adapter.trainable_names if n.startswith("item_encoder.")]
    assert in_encoder and all(n.startswith("item_encoder.adapters.0.") for n in in_encoder)
    assert {n for n, _ in base.backbone.named_parameters() if ".adapters." in n} == set(in_encoder)
    assert (len(adapter.trainable_names) > len(in_encoder)) == (modules == "both")
    # the branch is on the path: a nonzero up-projection changes every output
    with torch.no_grad():
        encoder.adapters[0].up.weight.normal_()
    changed = outputs(base, model, seqs)
    assert not any(torch.allclose(a, b) for a, b in zip(before, changed, strict=True))


def trainable_after(text_backbone, modules: str) -> tuple[set[str], list]:
    base = load_backbone(text_backbone)
    model = TransferModel(base.backbone, base.backbone.item_encoder.make_target_head(6, target_rows(base)))
    apply_strategy(model, "peterrec", seed=0, modules=modules)
    return {n for n, p in model.named_parameters() if p.requires_grad}, adapters_of(model)


def test_strategy_trains_exactly_the_declared_item_encoder_adapters(text_backbone):
    backbone_only, (patches, norms) = trainable_after(text_backbone, "backbone")
    assert (patches.kind, norms.kind) == ("bottleneck", "unfreeze")
    both, _ = trainable_after(text_backbone, "both")
    encoder_only, _ = trainable_after(text_backbone, "item_encoder")
    encoder_names = {n for n in both if n.startswith("backbone.item_encoder.")}
    branch = "backbone.item_encoder.adapters.0"
    assert encoder_names == {f"{branch}.{layer}.{p}" for layer in ("down", "up") for p in ("weight", "bias")}
    patch_names = {f"backbone.{n}" for n in patches.trainable_names}
    assert patch_names and patch_names <= backbone_only
    assert both == backbone_only | encoder_names
    assert encoder_only == (backbone_only - patch_names) | encoder_names
    assert not any(n.startswith("backbone.item_encoder.projection") for n in both)


def test_item_encoder_adapters_need_a_content_encoder_and_the_bottleneck_kind(text_backbone):
    id_backbone = NextItNet(20, channels=8, dilations=(1,))
    for modules in ("item_encoder", "both"):
        with pytest.raises(ValueError, match="ID item encoder has no layers"):
            add_adapters(id_backbone, "bottleneck", modules=modules)
    head = torch.nn.Linear(8, 3)
    with pytest.raises(ValueError, match="ID item encoder"):
        apply_strategy(TransferModel(id_backbone, head), "peterrec", modules="item_encoder")
    text = load_backbone(text_backbone).backbone
    with pytest.raises(ValueError, match="only bottleneck adapters go into the item encoder, not 'lora'"):
        add_adapters(text, "lora", modules="item_encoder")
    assert len(text.item_encoder.adapters) == 0


# --- 4. items added after training ---


def new_item_file(path: Path, copies: dict[str, str]) -> Path:
    """An item file of new items, each with the text of an existing one: ``{new: existing}``."""
    rows = [{**text_of(existing), "item_id": new} for new, existing in copies.items()]
    return write_items(path, rows)


def test_a_new_item_is_scored_from_its_text(text_backbone, tmp_path, cli):
    base = load_backbone(text_backbone)
    known = base.vocab.items[5]
    path = new_item_file(tmp_path / "new.csv", {"brand new": known})
    seqs = histories(len(base.vocab))
    with torch.no_grad():
        before = base.model.next_item_scores(seqs)
    column = base.vocab.id_of(known) - NUM_SPECIAL_TOKENS
    bias = base.output.bias[column].item()
    assert bias != 0.0  # trained, so the test tells "minus the bias" apart

    assert add_items(base, path) == ["brand new"]
    assert base.vocab.id_of("brand new") == len(base.vocab) - 1 + NUM_SPECIAL_TOKENS
    with torch.no_grad():
        after = base.model.next_item_scores(seqs)
    assert after.shape == (len(seqs), before.shape[1] + 1)
    assert torch.equal(after[:, :-1], before)
    assert torch.allclose(after[:, -1], before[:, column] - bias, atol=1e-5)
    assert add_items(base, path) == []  # known now

    # from the command line: k covers every item, so the new one is listed with the score computed here
    k = len(base.vocab)
    plain = json.loads(cli("recommend", text_backbone, "--user", "u00001", "-k", k).stdout)
    assert "brand new" not in plain["items"]
    result = cli("recommend", text_backbone, "--user", "u00001", "-k", k, "--items", path)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    listed = dict(zip(record["items"], record["scores"], strict=True))
    expected = listed[known] - round(bias, 5)
    assert listed["brand new"] == pytest.approx(expected, abs=2e-5)


def test_an_id_and_text_backbone_gives_new_items_a_zero_id_row(tmp_path):
    run_dir = run_pretrain(pretrain_config("id+text"), out=tmp_path / "idtext")
    base = load_backbone(run_dir)
    encoder = base.backbone.item_encoder
    known = base.vocab.items[0]
    add_items(base, new_item_file(tmp_path / "new.csv", {"fresh": known}))
    new_id, known_id = base.vocab.id_of("fresh"), base.vocab.id_of(known)
    assert torch.count_nonzero(encoder.ids.weight[new_id]) == 0
    assert torch.count_nonzero(encoder.ids.weight[known_id]) > 0
    seqs = histories(len(base.vocab) - 1)
    with torch.no_grad():
        hidden = base.backbone(base.model.model_input(seqs))[:, -1]
        content = encoder.content_vectors(encoder.features, torch.tensor([known_id]))[0]
        scores = base.model.next_item_scores(seqs)
    assert base.output.bias[-1].item() == 0.0
    assert torch.allclose(scores[:, -1], hidden @ content, atol=1e-5)


def test_a_new_target_item_of_a_coldrec_run_is_scored_from_its_text(coldrec_run, tmp_path):
    run = load_run(coldrec_run)
    head = run.model.head
    known = run.target_vocab.items[0]
    added = add_items(run, new_item_file(tmp_path / "new.csv", {"target new": known}))
    assert added == ["target new"] and run.target_vocab.items[-1] == "target new"
    seqs = histories(len(run.vocab))
    # its vector, computed apart from the head: the run's featurizer, then the encoder
    row = text_of(known)
    features = run.base.content.featurizer.transform(["x"], [f"{row['title']} {row['genres']}"])
    table = FeatureTable.from_matrix(features)
    with torch.no_grad():
        user = run.model.user_representation(seqs)
        # plus the head's trained weights of the words no source item has (zero at init)
        words, offsets, values = table.bag(torch.tensor([0]))
        mapped = head.column_map[words]
        assert head.new_words is not None and bool((mapped >= 0).any())
        assert torch.count_nonzero(head.new_words) > 0
        extra = F.embedding_bag(
            mapped.clamp(min=0),
            head.new_words,
            offsets,
            mode="sum",
            per_sample_weights=values * (mapped >= 0),
        )
        vector = run.backbone.item_encoder.content_vectors(table, torch.tensor([0]), extra)[0]
        scores = run.model(seqs)
    column = run.target_vocab.id_of(known) - NUM_SPECIAL_TOKENS
    assert head.bias[-1].item() == 0.0 and head.bias[column].item() != 0.0
    assert torch.allclose(scores[:, -1], user @ vector, atol=1e-5)
    assert torch.allclose(scores[:, -1], scores[:, column] - head.bias[column], atol=1e-5)


# --- 5. zero-shot cold start ---


def test_zero_shot_is_the_next_item_finetune_model_at_init(text_backbone):
    config = coldrec_config()
    base = load_backbone(text_backbone)
    task = build_task(config, base)
    seqs = histories(len(base.vocab))
    with torch.no_grad():
        zero_shot = task.zero_shot_model()(seqs)
        hidden = base.backbone(seqs)[:, -1]  # causal: the next-item read-out is the last position
        columns = torch.arange(task.num_target_items)
        vectors = base.backbone.item_encoder.content_vectors(task.target_features, columns)
    assert zero_shot.shape == (len(seqs), task.num_target_items)
    assert torch.allclose(zero_shot, hidden @ vectors.T, atol=1e-5)

    fresh = load_backbone(text_backbone)
    model = TransferModel(fresh.backbone, task.make_head(fresh), pooling="next_item")
    apply_strategy(model, "peterrec", seed=0, modules="both")
    assert adapters_of(model) and torch.count_nonzero(model.head.bias) == 0
    with torch.no_grad():
        at_init = model.eval()(seqs)
    assert torch.allclose(at_init, zero_shot, atol=1e-6)


def test_evaluate_zero_shot_from_the_command_line(text_backbone, coldrec_run, tmp_path, cli):
    args = ["--zero-shot", "-c", COLDREC_CONFIG, *set_args(COLDREC_OVERRIDES)]
    result = cli("evaluate", text_backbone, *args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    # the same rows as the cold-start run's zero_shot baseline (same data, split and backbone)
    assert metrics == test_metrics(read_manifest(coldrec_run).baselines["zero_shot"])

    id_backbone = run_pretrain(pretrain_config("id"), out=tmp_path / "id")
    result = cli("evaluate", id_backbone, *args)
    assert result.exit_code == 2
    assert "content item" in result.stderr and "'id'" in result.stderr and "Traceback" not in result.output


# --- 6. unused feature columns ---


def test_columns_only_target_items_have_start_and_stay_zero(text_backbone):
    base = load_backbone(text_backbone)
    featurizer = base.content.featurizer
    source = {row["item_id"]: f"{row['title']} {row['genres']}" for row in read_items()}
    source_words = {w for item in base.vocab.items for w in WORD.findall(source[item].lower())}
    expected = {column for word, column in featurizer.vocabulary.items() if word not in source_words}
    assert featurizer.vocabulary["t001"] in expected and len(expected) >= 100
    unused = base.content.features.unused_columns()
    assert set(torch.nonzero(unused).flatten().tolist()) == expected

    trained = base.backbone.item_encoder.projection.first.weight  # EmbeddingBag: one row per column
    assert torch.count_nonzero(trained[unused]) == 0
    assert bool((trained[~unused] != 0).any(dim=1).all())
    torch.manual_seed(0)
    fresh = build_next_item_model(base.config.model, len(base.vocab), 16, base.content.features)
    initial = fresh.backbone.item_encoder.projection.first.weight
    assert torch.count_nonzero(initial[unused]) == 0 and bool((initial[~unused] != 0).any(dim=1).all())
    assert not torch.equal(initial[~unused], trained[~unused])  # the used ones did train


def test_dense_features_zero_their_unused_columns():
    dense = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.0, 0.0]])
    table = FeatureTable.from_matrix(dense.numpy())
    assert table.unused_columns().tolist() == [False, True, False]
    projection = ContentProjection(3, 4, 5, sparse=False, unused=table.unused_columns())
    assert torch.count_nonzero(projection.first.weight[:, 1]) == 0
    assert torch.count_nonzero(projection.first.weight[:, [0, 2]]) == 10


# --- 7. content baselines ---


def test_content_knn_matches_a_hand_computation():
    a, b, c = [3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]
    source = np.array([[0.0, 0.0, 0.0]] * NUM_SPECIAL_TOKENS + [a, b, c], dtype=np.float32)
    target = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 2.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    # user 0 clicked a and b: mean of unit rows (0.6, 0.8, 0) and (0, 0, 1) = (0.3, 0.4, 0.5), norm sqrt(0.5)
    # user 1 clicked c twice: profile (1, 0, 0); user 2 has only [PAD] and [UNK]: no profile, zero scores
    seqs = torch.tensor([[PAD, 4, 5], [6, PAD, 6], [PAD, PAD, 3]])
    root_half = math.sqrt(0.5)
    expected = torch.tensor(
        [
            [0.3 / root_half, (0.4 + 0.5) * root_half / root_half, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
        ]
    )
    for rows in (lambda m: m, sp.csr_matrix):
        scores = ContentKNNScorer(rows(source), rows(target)).scores(seqs)
        assert scores.dtype == torch.float32 and scores.shape == (3, 3)
        assert torch.allclose(scores, expected, atol=1e-6)


def test_random_scorer_is_reproducible_and_seeded():
    seqs = torch.zeros(3, 5, dtype=torch.long)
    first = RandomScorer(7, seed=1).scores(seqs)
    assert first.shape == (3, 7) and bool(((first >= 0) & (first < 1)).all())
    assert torch.equal(first, RandomScorer(7, seed=1).scores(seqs))
    assert not torch.equal(first, RandomScorer(7, seed=2).scores(seqs))
    assert len({tuple(row) for row in first.tolist()}) == 3  # a fresh draw per row


# --- 8. causality with a text encoder ---


def tiny_content_backbone(causal: bool, with_ids: bool) -> NextItNet:
    torch.manual_seed(0)
    num_items = 40
    features = sp.random(num_items + NUM_SPECIAL_TOKENS, 30, density=0.2, format="csr", random_state=0)
    encoder = ContentItemEncoder(num_items, 16, FeatureTable.from_matrix(features), with_ids=with_ids)
    backbone = NextItNet(num_items, 16, (1, 2), 3, causal, item_encoder=encoder)
    torch.manual_seed(1)
    add_adapters(backbone, "bottleneck", modules="both")
    with torch.no_grad():  # nonzero patches, so they are on the path too
        for name, tensor in backbone.named_parameters():
            if ".up." in name or "branch" in name:
                tensor.normal_(std=0.1)
    return backbone.eval()


@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("causal", [True, False])
def test_future_items_do_not_reach_the_past_through_the_text_encoder(causal, with_ids):
    backbone = tiny_content_backbone(causal, with_ids)
    generator = torch.Generator().manual_seed(5)
    seqs = torch.randint(NUM_SPECIAL_TOKENS, 44, (4, 20), generator=generator)
    seqs[0, :3] = PAD
    t = 9
    changed = seqs.clone()
    changed[:, t + 1 :] = torch.randint(NUM_SPECIAL_TOKENS, 44, (4, 20 - t - 1), generator=generator)
    with torch.no_grad():
        diff = (backbone(seqs)[:, : t + 1] - backbone(changed)[:, : t + 1]).abs().max().item()
    if causal:
        assert diff == 0.0
    else:
        assert diff > 1e-4


# --- every strategy on a content backbone ---


@pytest.mark.parametrize(
    "strategy, extra",
    [
        ("fine_all", ()),
        ("fine_cls", ()),
        ("fine_last1", ()),
        ("fine_last2", ()),
        ("peter_zero", ("adapter.modules=both",)),
        ("scratch", ()),
        ("adapter", ("adapter.kind=lora", "adapter.modules=auto")),
    ],
)
def test_every_strategy_trains_and_reloads_on_a_text_backbone(text_backbone, tmp_path, strategy, extra):
    out = run_finetune(coldrec_config(*extra), text_backbone, strategy=strategy, out=tmp_path / strategy)
    manifest = read_manifest(out)
    assert manifest.metrics["test/ndcg@10"] > 0
    run = load_run(out)
    task = build_task(run.config, run.base)
    assert test_metrics(task.evaluate(run.model, "test", "cpu")[0]) == test_metrics(manifest.metrics)
    # what the strategy froze is the pretrained encoder, bit for bit
    pristine = load_backbone(text_backbone).backbone.item_encoder.projection.state_dict()
    projection = run.backbone.item_encoder.projection.state_dict()
    changed = {k for k, v in pristine.items() if not torch.equal(v, projection[k])}
    assert bool(changed) == (strategy in ("fine_all", "peter_zero", "scratch")), changed
