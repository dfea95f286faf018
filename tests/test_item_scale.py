"""``strategy.item_scale: init``: the frozen pretrained item table rescaled to the initialiser's spread."""

import dataclasses

import pytest
import torch

from peterrec.commands.compare import run_identity
from peterrec.commands.finetune import resolve_overrides
from peterrec.config import FinetuneConfig, load_config
from peterrec.model.backbone import NextItNet
from peterrec.model.heads import ClassifierHead
from peterrec.model.init import TRUNCATED_INIT_STD, trunc_normal_
from peterrec.model.transfer import (
    STRATEGIES,
    TransferModel,
    apply_strategy,
    item_rank_applies,
    item_scale_applies,
    rescale_item_table,
)
from peterrec.tokens import NUM_SPECIAL_TOKENS

NUM_ITEMS, CHANNELS = 300, 16


def _pretrained_like(spread: float = 2.0) -> TransferModel:
    """A backbone whose item table is ``spread`` times as wide as drawn, as pretraining leaves it."""
    torch.manual_seed(0)
    backbone = NextItNet(NUM_ITEMS, channels=CHANNELS, dilations=(1, 2))
    with torch.no_grad():
        backbone.item_encoder.embedding.weight.mul_(spread)
    return TransferModel(backbone, ClassifierHead(CHANNELS, 2), pooling="mean")


def _table(model: TransferModel) -> torch.Tensor:
    return model.backbone.item_encoder.embedding.weight.detach().clone()


def test_truncated_init_std_is_what_the_initialiser_draws():
    torch.manual_seed(0)
    drawn = trunc_normal_(torch.empty(200_000)).std().item()
    assert drawn == pytest.approx(TRUNCATED_INIT_STD, rel=0.01)


def test_rescale_gives_the_real_items_the_init_spread_by_one_factor():
    model = _pretrained_like(spread=2.0)
    before = _table(model)
    factor = rescale_item_table(model.backbone)
    after = _table(model)
    assert after[NUM_SPECIAL_TOKENS:].std().item() == pytest.approx(TRUNCATED_INIT_STD, rel=1e-5)
    assert factor == pytest.approx(0.5, rel=0.05)
    torch.testing.assert_close(after, before * factor)  # special rows too: one factor for the whole table


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_only_patched_pretrained_strategies_rescale(strategy):
    kept, scaled = _pretrained_like(), _pretrained_like()
    apply_strategy(kept, strategy, seed=3, item_scale="keep")
    apply_strategy(scaled, strategy, seed=3, item_scale="init")
    same = torch.equal(_table(kept), _table(scaled))
    assert same != item_scale_applies(strategy)
    assert item_scale_applies(strategy) == (strategy in ("peterrec", "adapter"))
    table_trains = scaled.backbone.item_encoder.embedding.weight.requires_grad
    assert table_trains == (strategy in ("fine_all", "scratch"))


def test_item_patch_is_drawn_for_the_rescaled_table():
    """``init`` equals rescaling the table first, then patching as usual (the item patch's scale follows)."""
    by_option, by_hand = _pretrained_like(), _pretrained_like()
    apply_strategy(by_option, "peterrec", seed=1, item_rank=2, item_scale="init")
    rescale_item_table(by_hand.backbone)
    apply_strategy(by_hand, "peterrec", seed=1, item_rank=2, item_scale="keep")
    a, b = by_option.state_dict(), by_hand.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_rescaled_model_is_still_its_own_patch_identity():
    """The patches start at zero, so the patched model equals the rescaled, unpatched one."""
    patched, plain = _pretrained_like(), _pretrained_like()
    apply_strategy(patched, "peterrec", seed=0, item_rank=4, item_scale="init")
    rescale_item_table(plain.backbone)
    seqs = torch.randint(NUM_SPECIAL_TOKENS, NUM_ITEMS + NUM_SPECIAL_TOKENS, (4, 9))
    torch.testing.assert_close(patched.backbone(seqs), plain.backbone(seqs))


def test_unknown_item_scale_is_refused():
    with pytest.raises(ValueError, match="item_scale"):
        apply_strategy(_pretrained_like(), "peterrec", item_scale="shrink")


def test_constant_table_is_refused():
    model = _pretrained_like()
    with torch.no_grad():
        model.backbone.item_encoder.embedding.weight.fill_(0.5)
    with pytest.raises(ValueError, match="spread"):
        rescale_item_table(model.backbone)


def test_saved_config_says_keep_where_the_option_does_not_act():
    """A run saves only what acted on it, so turning the option on leaves other strategies' runs current."""
    task = ["task.type=profile", "task.labels=x.csv"]
    base = load_config(FinetuneConfig, None, task)
    on = load_config(FinetuneConfig, None, [*task, "strategy.item_scale=init"])
    for strategy in STRATEGIES:
        resolved = resolve_overrides(on, strategy, 0, None)
        assert resolved.strategy.item_scale == ("init" if item_scale_applies(strategy) else "keep")
        unchanged = run_identity(resolved) == run_identity(resolve_overrides(base, strategy, 0, None))
        assert unchanged != item_scale_applies(strategy)


def test_saved_config_says_item_rank_0_where_the_offset_does_not_act():
    """Likewise for ``item_rank``, and a run saved with the rank that never acted on it still counts as the
    same run (its saved config goes through the same clearing)."""
    task = ["task.type=profile", "task.labels=x.csv"]
    rank8 = load_config(FinetuneConfig, None, [*task, "strategy.item_rank=8"])
    rank32 = load_config(FinetuneConfig, None, [*task, "strategy.item_rank=32"])
    for strategy in STRATEGIES:
        resolved = resolve_overrides(rank32, strategy, 0, None)
        assert resolved.strategy.item_rank == (32 if item_rank_applies(strategy) else 0)
        unchanged = run_identity(resolved) == run_identity(resolve_overrides(rank8, strategy, 0, None))
        assert unchanged != item_rank_applies(strategy)
        saved_before = dataclasses.replace(
            resolved, strategy=dataclasses.replace(resolved.strategy, item_rank=8)
        )
        assert (run_identity(saved_before) == run_identity(resolved)) != item_rank_applies(strategy)
    assert [s for s in STRATEGIES if item_rank_applies(s)] == ["peterrec", "peter_zero", "adapter"]
