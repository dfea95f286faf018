"""Pretraining objectives: batch construction, samplers, full and sampled softmax (with logQ correction)."""

import math

import pytest
import torch
import torch.nn.functional as F

from peterrec import MASK, NUM_SPECIAL_TOKENS, PAD
from peterrec.model.item_encoder import ItemOutput
from peterrec.training.objectives import (
    autoregressive_batch,
    full_softmax_loss,
    future_window_batch,
    mask_batch,
    pretrain_loss,
    sampled_softmax_loss,
)
from peterrec.training.samplers import (
    CandidateSampler,
    LogUniformSampler,
    PopularitySampler,
    UniformSampler,
    make_sampler,
)


def _left_padded(lengths: list[int], max_len: int, num_items: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    seqs = torch.full((len(lengths), max_len), PAD, dtype=torch.long)
    for row, n in enumerate(lengths):
        if n:
            seqs[row, max_len - n :] = torch.randint(4, num_items + 4, (n,), generator=g)
    return seqs


def _output(num_items: int, channels: int, seed: int = 0) -> ItemOutput:
    torch.manual_seed(seed)
    out = ItemOutput(num_items, channels)
    with torch.no_grad():
        out.bias.normal_()  # non-zero so that a dropped bias term would be caught
    return out


class FixedSampler(CandidateSampler):
    """Returns preset columns; q is an arbitrary non-uniform distribution."""

    def __init__(self, columns: list[int], num_items: int):
        weights = torch.arange(1, num_items + 1, dtype=torch.float64)
        super().__init__((weights / weights.sum()).log())
        self.columns = torch.tensor(columns)

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        assert num_samples == len(self.columns)
        return self.columns.clone()


# ----------------------------------------------------------------------------- output layer


def test_item_output_shapes_init_and_logits_for():
    out = _output(40, 8)
    assert out.weight.shape == (40, 8) and out.bias.shape == (40,)
    assert ItemOutput(40, 8).bias.abs().sum() == 0
    assert out.weight.abs().max() <= 0.04 + 1e-6  # trunc-normal at 2 std
    hidden = torch.randn(5, 8)
    full = out(hidden)
    assert full.shape == (5, 40)
    shared = torch.tensor([3, 0, 39, 3])
    assert torch.allclose(out.logits_for(hidden, shared), full[:, shared], atol=1e-6)
    per_row = torch.randint(0, 40, (5, 7))
    assert torch.allclose(out.logits_for(hidden, per_row), full.gather(1, per_row), atol=1e-6)
    assert out(torch.randn(2, 3, 8)).shape == (2, 3, 40)


# ----------------------------------------------------------------------------- batches


def test_autoregressive_batch_targets_pad_where_input_or_target_is_pad():
    seqs = _left_padded([0, 1, 2, 5, 9], 9, num_items=20)
    inputs, targets = autoregressive_batch(seqs)
    assert torch.equal(inputs, seqs[:, :-1])
    no_loss = (seqs[:, :-1] == PAD) | (seqs[:, 1:] == PAD)
    assert torch.equal(targets == PAD, no_loss)
    assert torch.equal(targets[~no_loss], seqs[:, 1:][~no_loss])
    # A length-n sequence yields n - 1 training positions.
    assert (targets != PAD).sum(dim=1).tolist() == [0, 0, 1, 4, 8]


def test_future_window_of_one_is_the_next_item_objective_and_draws_nothing():
    seqs = _left_padded([0, 1, 2, 5, 9], 9, num_items=20)
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    inputs, targets = future_window_batch(seqs, 1, generator)
    expected_inputs, expected_targets = autoregressive_batch(seqs)
    assert torch.equal(inputs, expected_inputs) and torch.equal(targets, expected_targets)
    assert torch.equal(generator.get_state(), state)


def test_future_window_targets_lie_within_the_next_window_items():
    # Distinct items per row, so each target names the position it was taken from.
    length, window = 12, 4
    seqs = torch.full((3, length + 1), PAD, dtype=torch.long)
    for row, n in enumerate([13, 7, 2]):
        seqs[row, length + 1 - n :] = torch.arange(4, 4 + n)
    seen_offsets = set()
    for seed in range(20):
        inputs, targets = future_window_batch(seqs, window, torch.Generator().manual_seed(seed))
        assert torch.equal(inputs, seqs[:, :-1])
        # Loss positions are exactly the next-item objective's: every real input position.
        assert torch.equal(targets == PAD, autoregressive_batch(seqs)[1] == PAD)
        for row, t in (targets != PAD).nonzero().tolist():
            source = int((seqs[row] == targets[row, t]).nonzero())
            offset = source - t
            last = length  # the row's last item: a target is never read past it
            assert 1 <= offset <= window or source == last, (row, t, offset)
            assert source > t  # causal: the target comes after every input the position sees
            if t + window <= last:
                seen_offsets.add(offset)
    assert seen_offsets == {1, 2, 3, 4}  # every offset of the window is drawn
    # Near the end the window is clipped to the last item.
    _, targets = future_window_batch(seqs, window, torch.Generator().manual_seed(0))
    assert int(targets[0, length - 1]) == int(seqs[0, length])


def test_future_window_batch_is_reproducible_and_rejects_a_zero_window():
    seqs = _left_padded([3, 8, 20], 21, num_items=50)
    a = future_window_batch(seqs, 5, torch.Generator().manual_seed(7))
    b = future_window_batch(seqs, 5, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="window"):
        future_window_batch(seqs, 0, torch.Generator())


def test_mask_batch_counts_and_never_touches_pad():
    lengths = [0, 1, 2, 3, 5, 15, 17, 50, 99, 100, 101, 199, 200]
    seqs = _left_padded(lengths, 200, num_items=300)
    inputs, targets = mask_batch(seqs, 300, torch.Generator().manual_seed(1))
    pad = seqs == PAD
    assert torch.all(inputs[pad] == PAD) and torch.all(targets[pad] == PAD)
    expected = [0 if n == 0 else min(30, max(1, round(0.3 * n))) for n in lengths]
    assert (targets != PAD).sum(dim=1).tolist() == expected
    chosen = targets != PAD
    assert torch.equal(targets[chosen], seqs[chosen])
    assert torch.equal(inputs[~chosen], seqs[~chosen])


def test_mask_batch_ratio_and_cap_are_parameters():
    seqs = _left_padded([10, 40, 200], 200, num_items=50)
    _, targets = mask_batch(seqs, 50, torch.Generator().manual_seed(0), ratio=0.5, max_masked=12)
    assert (targets != PAD).sum(dim=1).tolist() == [5, 12, 12]


def test_mask_batch_80_10_10_split():
    num_items = 5000
    seqs = _left_padded([200] * 512, 200, num_items=num_items)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for _ in range(4):
        inputs, targets = mask_batch(seqs, num_items, g)
        chosen = targets != PAD
        masked = inputs[chosen] == MASK
        same = inputs[chosen] == seqs[chosen]
        counts += torch.tensor([masked.sum(), (~masked & ~same).sum(), same.sum()])
    shares = counts / counts.sum()
    assert counts.sum() == 4 * 512 * 30
    assert torch.allclose(shares, torch.tensor([0.8, 0.1, 0.1]), atol=0.01), shares


def test_mask_batch_replacements_are_real_items_and_choice_is_uniform():
    num_items = 5
    seqs = _left_padded([10] * 400 + [4] * 100, 12, num_items=num_items)
    g = torch.Generator().manual_seed(3)
    seen = set()
    chosen_per_position = torch.zeros(12)
    for _ in range(25):
        inputs, targets = mask_batch(seqs, num_items, g)
        real_inputs = inputs[seqs != PAD]
        assert torch.all((real_inputs == MASK) | (real_inputs >= NUM_SPECIAL_TOKENS))
        assert real_inputs.max() < num_items + NUM_SPECIAL_TOKENS
        seen.update(inputs[(targets != PAD) & (inputs != MASK)].tolist())
        chosen_per_position += (targets[:400] != PAD).sum(dim=0)
    assert seen == set(range(4, 4 + num_items))
    # 3 of 10 real positions per row: every real position is chosen with probability 0.3.
    share = chosen_per_position[2:] / (25 * 400)
    assert torch.all(chosen_per_position[:2] == 0)
    assert torch.allclose(share, torch.full((10,), 0.3), atol=0.02), share


def test_mask_batch_is_reproducible_from_the_generator():
    seqs = _left_padded([3, 30, 60], 60, num_items=100)
    a = mask_batch(seqs, 100, torch.Generator().manual_seed(7))
    b = mask_batch(seqs, 100, torch.Generator().manual_seed(7))
    c = mask_batch(seqs, 100, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


# ----------------------------------------------------------------------------- losses


def test_full_softmax_loss_equals_cross_entropy_on_selected_positions():
    out = _output(30, 6)
    hidden = torch.randn(3, 7, 6)
    targets = _left_padded([0, 3, 7], 7, num_items=30, seed=2)
    keep = targets != PAD
    by_hand = F.cross_entropy(hidden[keep] @ out.weight.T + out.bias, targets[keep] - 4)
    assert torch.allclose(full_softmax_loss(out, hidden, targets), by_hand, atol=1e-6)
    assert torch.allclose(pretrain_loss(out, hidden, targets), by_hand, atol=1e-6)
    flat = full_softmax_loss(out, hidden.reshape(21, 6), targets.reshape(21))
    assert torch.allclose(flat, by_hand, atol=1e-6)


def test_loss_with_no_target_is_zero_not_nan():
    out = _output(10, 4)
    hidden = torch.randn(2, 5, 4, requires_grad=True)
    loss = full_softmax_loss(out, hidden, torch.zeros(2, 5, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_loss_ignores_positions_without_target(softmax):
    num_items = 50
    out = _output(num_items, 8)
    seqs = _left_padded([6, 20, 13], 20, num_items=num_items)
    _, targets = mask_batch(seqs, num_items, torch.Generator().manual_seed(0))
    hidden = torch.randn(3, 20, 8, requires_grad=True)
    kwargs = {}
    if softmax == "sampled":
        kwargs = dict(sampler=make_sampler("log_uniform", num_items), num_samples=10)
    loss = pretrain_loss(
        out, hidden, targets, softmax=softmax, generator=torch.Generator().manual_seed(0), **kwargs
    )
    loss.backward()
    keep = targets != PAD
    assert torch.all(hidden.grad[~keep] == 0)
    assert torch.all(hidden.grad[keep].abs().sum(dim=-1) > 0)
    with torch.no_grad():
        changed = hidden.detach().clone()
        changed[~keep] = torch.randn(int((~keep).sum()), 8)
        again = pretrain_loss(
            out, changed, targets, softmax=softmax, generator=torch.Generator().manual_seed(0), **kwargs
        )
    assert again.item() == loss.item()


@pytest.mark.parametrize("logq_correction", [True, False])
def test_sampled_softmax_matches_manual_and_removes_accidental_hits(logq_correction):
    num_items, num_samples = 12, 5
    out = _output(num_items, 4)
    hidden = torch.randn(3, 4)
    target_columns = torch.tensor([2, 7, 11])
    sampled = [7, 0, 2, 2, 5]  # row 0 hits twice (column 2), row 1 once (7), row 2 never
    sampler = FixedSampler(sampled, num_items)
    loss = sampled_softmax_loss(
        out, hidden, target_columns, sampler, num_samples, torch.Generator(), logq_correction
    )
    q = sampler.probs().float()
    expected = []
    for row, target in enumerate(target_columns.tolist()):
        columns = [target] + [c for c in sampled if c != target]
        logits = hidden[row] @ out.weight[columns].T + out.bias[columns]
        if logq_correction:
            logits = logits - torch.log(num_samples * q[columns])
        expected.append(-torch.log_softmax(logits, dim=0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)


def test_in_batch_negatives_score_the_batch_targets_with_a_mixed_correction():
    num_items, num_samples = 12, 3
    out = _output(num_items, 4)
    hidden = torch.randn(3, 4)
    target_columns = torch.tensor([2, 7, 2])  # rows 0 and 2 share a target
    sampled = [7, 0, 5]
    sampler = FixedSampler(sampled, num_items)
    prior = PopularitySampler(torch.arange(num_items, 0, -1).double())
    loss = sampled_softmax_loss(
        out, hidden, target_columns, sampler, num_samples, torch.Generator(), True, in_batch_prior=prior
    )
    q, p = sampler.probs(), prior.probs()
    columns = sampled + target_columns.tolist()  # nothing masked; row i's positive is column 3 + i
    count = num_samples * q[columns] + len(target_columns) * p[columns]
    expected = []
    for row in range(3):
        logits = hidden[row] @ out.weight[columns].T + out.bias[columns] - torch.log(count).float()
        expected.append(-torch.log_softmax(logits, dim=0)[num_samples + row])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)


def test_pretrain_loss_sampled_dispatches_after_selection():
    num_items = 40
    out = _output(num_items, 8)
    hidden = torch.randn(2, 9, 8)
    targets = _left_padded([4, 9], 9, num_items=num_items)
    sampler = make_sampler("uniform", num_items)
    a = pretrain_loss(
        out, hidden, targets, softmax="sampled", sampler=sampler, num_samples=7,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    keep = targets != PAD
    b = sampled_softmax_loss(
        out, hidden[keep], targets[keep] - 4, sampler, 7, torch.Generator().manual_seed(5)
    )
    assert torch.allclose(a, b)


def test_losses_reject_bad_arguments():
    out = _output(10, 4)
    hidden = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="real item"):
        pretrain_loss(out, hidden, torch.tensor([[0, MASK, 5]]))
    with pytest.raises(ValueError, match="sampler"):
        pretrain_loss(out, hidden, torch.tensor([[0, 4, 5]]), softmax="sampled")
    with pytest.raises(ValueError, match="softmax"):
        pretrain_loss(out, hidden, torch.tensor([[0, 4, 5]]), softmax="hierarchical")
    with pytest.raises(ValueError, match="leading shape"):
        full_softmax_loss(out, hidden, torch.tensor([[4, 5]]))


# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize(
    "sampler",
    [
        UniformSampler(40),
        LogUniformSampler(40),
        PopularitySampler([0, 1, 3, 0, 50, 10, 7, 2, 0, 30] * 4, power=0.75),
    ],
    ids=["uniform", "log_uniform", "popularity"],
)
def test_sampler_frequencies_match_log_prob(sampler):
    columns = torch.arange(40)
    probs = sampler.log_prob(columns).exp()
    assert math.isclose(probs.sum().item(), 1.0, rel_tol=1e-5)
    assert torch.all(probs > 0)
    draws = sampler.sample(200_000, torch.Generator().manual_seed(0))
    assert draws.dtype == torch.long and draws.shape == (200_000,)
    # Columns cover real items only, so item ids (column + 4) never hit a special token.
    assert draws.min() >= 0 and draws.max() < 40
    empirical = torch.bincount(draws, minlength=40).double() / len(draws)
    assert torch.allclose(empirical, probs.double(), atol=0.004), (empirical - probs).abs().max()


def test_log_uniform_matches_tensorflow_formula():
    n = 1000
    lp = LogUniformSampler(n).log_prob(torch.tensor([0, 9, 999]))
    expected = [math.log((math.log(k + 2) - math.log(k + 1)) / math.log(n + 1)) for k in (0, 9, 999)]
    assert torch.allclose(lp, torch.tensor(expected), atol=1e-5)


def test_popularity_floor_and_power():
    q = PopularitySampler([8, 0, 2], power=0.5).probs()
    assert torch.allclose(
        q, torch.tensor([math.sqrt(8), 1.0, math.sqrt(2)], dtype=torch.float64) / 5.2426407, atol=1e-6
    )


def test_make_sampler_names_and_errors():
    assert isinstance(make_sampler("uniform", 5), UniformSampler)
    assert isinstance(make_sampler("log_uniform", 5), LogUniformSampler)
    assert isinstance(make_sampler("popularity", 3, counts=[3, 2, 1]), PopularitySampler)
    with pytest.raises(ValueError, match="counts"):
        make_sampler("popularity", 3)
    with pytest.raises(ValueError, match="one per item"):
        make_sampler("popularity", 4, counts=[3, 2, 1])
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("zipf", 3)


# ----------------------------------------------------------------------------- logQ correction


def _fit_context_free(
    logq_correction: bool, p: torch.Tensor, sampler: CandidateSampler, in_batch_prior=None
) -> torch.Tensor:
    """Fit per-item logits (constant hidden state) with sampled softmax; return the full softmax."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    num_items, batch, num_samples, steps = len(p), 512, 32, 500
    out = ItemOutput(num_items, 1)
    opt = torch.optim.SGD(out.parameters(), lr=5.0)
    # Linear decay to zero: sparse negative gradients make the tail noisy at a constant rate.
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    hidden = torch.ones(batch, 1)
    for _ in range(steps):
        targets = torch.multinomial(p, batch, replacement=True, generator=g)
        loss = sampled_softmax_loss(
            out, hidden, targets, sampler, num_samples, g, logq_correction, in_batch_prior=in_batch_prior
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        return torch.softmax(out(torch.ones(1, 1))[0].double(), dim=0)


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p / q).log()).sum())


def test_logq_correction_recovers_the_true_distribution():
    """Acceptance test: sampled softmax with logQ correction learns p; without it, p / q (flattened).

    Measured (seed 0): KL(p || learned) = 0.034 with correction, 1.64 without; top item 0.140 vs
    true 0.134 with correction, 0.0015 without; the uncorrected fit is within KL 0.03 of p / q.
    """
    num_items = 1000
    p = 1.0 / torch.arange(1, num_items + 1, dtype=torch.float64)  # Zipf(1) over frequency rank
    p /= p.sum()
    sampler = LogUniformSampler(num_items)
    # Thousands of tiny ops: one thread is ~10x faster than several contending for 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        corrected = _fit_context_free(True, p, sampler)
        uncorrected = _fit_context_free(False, p, sampler)
    finally:
        torch.set_num_threads(threads)
    kl_corrected, kl_uncorrected = _kl(p, corrected), _kl(p, uncorrected)

    assert kl_corrected < 0.08, kl_corrected
    assert kl_uncorrected > 1.0, kl_uncorrected
    assert kl_uncorrected > 15 * kl_corrected
    assert abs(corrected[0] / p[0] - 1) < 0.25, (corrected[0], p[0])
    # Without correction the model learns p / q: nearly flat for a log-uniform q, so the most
    # popular item is underrated by two orders of magnitude and the entropy is close to log(n).
    p_over_q = p / sampler.probs()
    p_over_q /= p_over_q.sum()
    assert _kl(p_over_q, uncorrected) < 0.1
    assert uncorrected[0] < p[0] / 20
    entropy = lambda d: float(-(d * d.log()).sum())  # noqa: E731
    assert entropy(uncorrected) > entropy(p) + 1.0
    assert abs(entropy(corrected) - entropy(p)) < 0.2


def test_in_batch_negatives_with_mixed_logq_correction_recover_the_true_distribution():
    """The batch's targets are drawn from p itself; subtracting log(S q + N p) keeps the fit unbiased.

    Measured (seed 0): KL(p || learned) = 0.009 (0.034 for the shared samples alone, the test above); top
    item 0.997 of p. Masking the other copies of a row's target instead gave KL 1.1.
    """
    num_items = 1000
    p = 1.0 / torch.arange(1, num_items + 1, dtype=torch.float64)
    p /= p.sum()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prior = PopularitySampler(p * 1e6)  # counts; the floor of 1 would flatten raw probabilities
        fitted = _fit_context_free(True, p, LogUniformSampler(num_items), in_batch_prior=prior)
    finally:
        torch.set_num_threads(threads)
    assert _kl(p, fitted) < 0.08, _kl(p, fitted)
    assert abs(fitted[0] / p[0] - 1) < 0.25, (fitted[0], p[0])


def test_softmax_auto_is_exact_for_small_vocabularies_and_sampled_for_large_or_sparse_ones():
    from peterrec.training.objectives import EXACT_SOFTMAX_MAX_ITEMS, resolve_softmax

    assert resolve_softmax("auto", 1682, 64) == "full"
    assert resolve_softmax("auto", EXACT_SOFTMAX_MAX_ITEMS, 64) == "full"
    assert resolve_softmax("auto", EXACT_SOFTMAX_MAX_ITEMS + 1, 64) == "sampled"
    assert resolve_softmax("auto", 1682, 64, sparse_embedding=True) == "sampled"
    assert resolve_softmax("auto", 40_000, 8192) == "sampled"  # the dense table's Adam state would be 21 GB
    assert resolve_softmax("full", 10**7, 64) == "full"
    assert resolve_softmax("sampled", 10, 64) == "sampled"
