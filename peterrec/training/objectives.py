"""Pretraining objectives: batch construction and the (sampled) softmax losses over an item output layer.

Two ways to turn click sequences into training pairs:

- ``autoregressive_batch`` (causal backbone): predict item t+1 from items <= t at every real position.
- ``mask_batch`` (non-causal backbone, GRec-style): corrupt a few real positions and predict the originals.

Targets are item ids with [PAD] meaning "no loss here". The output layer scores real items only, so
logit column j is item id j + 4; the losses convert ids to columns after selecting the positions that
carry a target, and never compute logits for the others.

For large vocabularies ``sampled_softmax_loss`` scores the target against a few negatives drawn from a
``CandidateSampler`` and, like TensorFlow's ``sampled_softmax_loss``, subtracts log(expected count) from
every logit (logQ correction) and masks accidental hits. Evaluation always uses the full softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from peterrec.choices import Softmax
from peterrec.model.item_encoder import ItemOutput
from peterrec.tokens import MASK, NUM_SPECIAL_TOKENS, PAD
from peterrec.training.samplers import CandidateSampler

# ----------------------------------------------------------------------------- batch construction


def autoregressive_batch(seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split left-padded sequences (B, L+1) into next-item ``(inputs, targets)``, each (B, L).

    ``targets[:, t]`` is the item after ``inputs[:, t]``. A target is [PAD] wherever the input or the
    target is [PAD], so the loss only covers positions that see a real item and predict one.
    """
    if seqs.dim() != 2 or seqs.shape[1] < 2:
        raise ValueError(f"seqs must be (B, L+1) with L >= 1, got shape {tuple(seqs.shape)}")
    inputs = seqs[:, :-1]
    targets = seqs[:, 1:].masked_fill(inputs == PAD, PAD)
    return inputs, targets


def future_window_batch(
    seqs: torch.Tensor, window: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`autoregressive_batch`, but each position's target is drawn from the next ``window`` items.

    For input position ``t`` the target is ``seqs[:, t + j]`` with ``j`` uniform in ``1..window`` and
    clipped to the last item of the row, drawn anew every call from the CPU ``generator``. The inputs
    are those of :func:`autoregressive_batch` and every target lies after its input, so a causal model
    still never sees what it predicts. ``window=1`` is the next-item objective exactly (and draws
    nothing). Predicting any of the coming items rather than the very next one is the "dense all-action"
    idea of PinnerFormer (Pancha et al., KDD 2022): the representation has to carry the user's taste
    over the next stretch of clicks, not only what follows the newest one (docs/design.md).
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    inputs, targets = autoregressive_batch(seqs)
    if window == 1:
        return inputs, targets
    batch, length = inputs.shape
    ahead = torch.randint(1, window + 1, (batch, length), generator=generator).to(seqs.device)
    positions = torch.arange(length, device=seqs.device).unsqueeze(0)
    source = (positions + ahead).clamp(max=length)  # column in seqs; length is the row's last item
    targets = seqs.gather(1, source).masked_fill(inputs == PAD, PAD)
    return inputs, targets


def masked_count(lengths: torch.Tensor, ratio: float = 0.3, max_masked: int = 30) -> torch.Tensor:
    """Positions to mask per sequence: min(max_masked, max(1, round(ratio * len))), 0 for empty rows.

    Rounds half to even in float64, exactly like Python's ``round``.
    """
    n = torch.round(lengths.double() * ratio).long().clamp(min=1, max=max_masked)
    return torch.where(lengths > 0, n, torch.zeros_like(n))


def mask_batch(
    seqs: torch.Tensor,
    num_items: int,
    generator: torch.Generator,
    ratio: float = 0.3,
    max_masked: int = 30,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRec-style corruption of left-padded sequences (B, L) for the non-causal objective.

    Each row gets ``masked_count(len)`` of its real positions, chosen uniformly without replacement
    ([PAD] is never chosen). Each chosen position independently becomes [MASK] with probability 0.8,
    a uniformly random real item (ids 4..num_items+3) with probability 0.1, or stays unchanged.
    Returns ``(inputs, targets)``: targets hold the original item at chosen positions and [PAD]
    elsewhere. Fully vectorised; all draws come from the CPU ``generator``.
    """
    if seqs.dim() != 2:
        raise ValueError(f"seqs must be (B, L), got shape {tuple(seqs.shape)}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if max_masked < 1:
        raise ValueError(f"max_masked must be >= 1, got {max_masked}")
    device = seqs.device
    batch, length = seqs.shape
    real = seqs != PAD
    n_masked = masked_count(real.sum(dim=1), ratio, max_masked)

    # Random keys with PAD pushed last: the n smallest keys of a row are a uniform n-subset of its
    # real positions.
    keys = torch.rand(batch, length, generator=generator).to(device)
    keys = keys.masked_fill(~real, 2.0)
    order = keys.argsort(dim=1)
    take = torch.arange(length, device=device).unsqueeze(0) < n_masked.unsqueeze(1)
    chosen = torch.zeros_like(real).scatter(1, order, take)

    action = torch.rand(batch, length, generator=generator).to(device)
    random_items = torch.randint(
        NUM_SPECIAL_TOKENS, num_items + NUM_SPECIAL_TOKENS, (batch, length), generator=generator
    ).to(device)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(seqs, MASK), seqs)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_items, inputs)
    targets = seqs.masked_fill(~chosen, PAD)
    return inputs, targets


# ----------------------------------------------------------------------------- losses


def select_targets(hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep positions whose target is not [PAD]: returns hidden (N, C) and target columns (N,)."""
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree on leading shape"
        )
    keep = targets != PAD
    columns = targets[keep] - NUM_SPECIAL_TOKENS
    if columns.numel() and bool((columns < 0).any()):
        raise ValueError("targets must be [PAD] or real item ids (>= 4); found [MASK], [CLS] or [UNK]")
    return hidden[keep], columns


def _mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Sum / count instead of mean: an empty selection gives 0 (still in the graph), not NaN.
    return F.cross_entropy(logits, labels, reduction="sum") / max(labels.numel(), 1)


def _full_softmax(
    output: ItemOutput, hidden: torch.Tensor, columns: torch.Tensor, chunk_items: int | None = None
) -> torch.Tensor:
    exact = getattr(output, "cross_entropy", None)  # ItemOutput's: peterrec.model.exact_softmax
    if exact is not None:
        return exact(hidden, columns, chunk_items)
    return _mean_cross_entropy(output(hidden), columns)


def full_softmax_loss(
    output: ItemOutput, hidden: torch.Tensor, targets: torch.Tensor, chunk_items: int | None = None
) -> torch.Tensor:
    """Cross entropy over all real items, averaged over positions whose target is not [PAD].

    ``hidden`` is (B, L, C) or (N, C) and ``targets`` has its leading shape. Logits are computed for
    the selected positions only, ``chunk_items`` items at a time (default: a 64 MiB block), and never
    kept whole when there is more than one chunk.
    """
    selected, columns = select_targets(hidden, targets)
    return _full_softmax(output, selected, columns, chunk_items)


def sampled_softmax_loss(
    output: ItemOutput,
    hidden: torch.Tensor,
    target_columns: torch.Tensor,
    sampler: CandidateSampler,
    num_samples: int,
    generator: torch.Generator,
    logq_correction: bool = True,
    in_batch_prior: CandidateSampler | None = None,
) -> torch.Tensor:
    """Sampled softmax over the target and negatives shared by the whole batch.

    ``hidden`` is (N, C) and ``target_columns`` (N,) holds columns (item id - 4); ``num_samples``
    columns are drawn from ``sampler`` (q). With ``logq_correction`` every logit, true and sampled, has
    log(num_samples * q(column)) subtracted, as TensorFlow's ``sampled_softmax_loss`` does
    (``subtract_log_q``); without it the model learns p / q instead of p. A sampled column equal to a
    row's target (an accidental hit) is masked out of that row; the true class is at index 0.

    ``in_batch_prior`` (the click distribution p the batch's targets follow) adds the batch's N targets
    as negatives (mixed negative sampling, see ``_mixed_negatives_loss``). Returns the mean cross entropy.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if sampler.num_items != output.num_items:
        raise ValueError(f"sampler covers {sampler.num_items} items, the output layer {output.num_items}")
    candidates = sampler.sample(num_samples, generator).to(target_columns.device)
    if in_batch_prior is not None:
        return _mixed_negatives_loss(
            output, hidden, target_columns, candidates, sampler, in_batch_prior, logq_correction
        )
    true_logits = output.logits_for(hidden, target_columns.unsqueeze(1))  # (N, 1)
    sampled_logits = output.logits_for(hidden, candidates)  # (N, S)
    if logq_correction:
        log_count = math.log(num_samples)
        true_logits = true_logits - (log_count + sampler.log_prob(target_columns)).unsqueeze(1)
        sampled_logits = sampled_logits - (log_count + sampler.log_prob(candidates))
    hits = candidates.unsqueeze(0) == target_columns.unsqueeze(1)
    sampled_logits = sampled_logits.masked_fill(hits, torch.finfo(sampled_logits.dtype).min)
    logits = torch.cat([true_logits, sampled_logits], dim=1)
    labels = torch.zeros(len(target_columns), dtype=torch.long, device=logits.device)
    return _mean_cross_entropy(logits, labels)


def _mixed_negatives_loss(output, hidden, target_columns, sampled, sampler, in_batch_prior, logq_correction):
    """Mixed negative sampling: the candidates are the S shared samples followed by the batch's N targets;
    row i's positive is candidate S + i (its own target, the diagonal of the in-batch block).

    Nothing is masked: with the log expected counts subtracted, the sum over the candidate multiset is an
    importance-sampling estimate of the whole partition function, the target's own copies included
    (masking the copies of a popular target would under-count it and bias the model against it).
    """
    num_samples, rows = len(sampled), len(target_columns)
    candidates = torch.cat([sampled, target_columns])
    logits = output.logits_for(hidden, candidates)  # (N, S + N)
    if logq_correction:
        log_count = torch.logaddexp(
            math.log(num_samples) + sampler.log_prob(candidates),
            math.log(rows) + in_batch_prior.log_prob(candidates),
        )
        logits = logits - log_count
    labels = torch.arange(num_samples, num_samples + rows, device=logits.device)
    return _mean_cross_entropy(logits, labels)


# softmax: auto. The exact softmax costs O(V) per position, the sampled one O(S + N) (4,096 shared
# samples and the ~1,500 targets of a batch). Measured (docs/performance.md "Time to quality"): at 1,682
# items the exact one is the cheaper per step and as good; at 100,000 items it took 9x longer per epoch than
# the sampled route, which reached 94.9% of its best validation NDCG@10 in 134 s against its 1,232 s to 95%.
# The exact softmax is kept while it costs at most a few times the sampled one per position.
EXACT_SOFTMAX_MAX_ITEMS = 20_000
# ... and only while the dense output table's training state (weight, gradient, two Adam moments) is small.
EXACT_SOFTMAX_MAX_TABLE_BYTES = 2 * 1024**3


def resolve_softmax(softmax: Softmax, num_items: int, channels: int, sparse_embedding: bool = False) -> str:
    """``full`` or ``sampled``: ``auto`` picks the exact softmax for vocabularies up to
    ``EXACT_SOFTMAX_MAX_ITEMS`` items whose dense table state fits ``EXACT_SOFTMAX_MAX_TABLE_BYTES``, and the
    sampled one for larger vocabularies and for sparse item tables."""
    if softmax != "auto":
        return softmax
    table_bytes = 4 * 4 * num_items * channels
    small = num_items <= EXACT_SOFTMAX_MAX_ITEMS and table_bytes <= EXACT_SOFTMAX_MAX_TABLE_BYTES
    return "full" if small and not sparse_embedding else "sampled"


def pretrain_loss(
    output: ItemOutput,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    softmax: Softmax = "full",
    sampler: CandidateSampler | None = None,
    num_samples: int = 100,
    generator: torch.Generator | None = None,
    logq_correction: bool = True,
    in_batch_prior: CandidateSampler | None = None,
    chunk_items: int | None = None,
) -> torch.Tensor:
    """The pretraining loss for either objective: targets are item ids, [PAD] where there is no loss.

    ``softmax="full"`` scores all real items (exactly, ``chunk_items`` at a time); ``softmax="sampled"``
    needs ``sampler`` and ``generator`` and uses ``num_samples`` shared negatives, plus the batch's
    targets when ``in_batch_prior`` is given (see ``sampled_softmax_loss``).
    """
    selected, columns = select_targets(hidden, targets)
    if softmax == "full":
        return _full_softmax(output, selected, columns, chunk_items)
    if softmax == "sampled":
        if sampler is None or generator is None:
            raise ValueError("softmax='sampled' needs a sampler and a generator")
        return sampled_softmax_loss(
            output,
            selected,
            columns,
            sampler,
            num_samples,
            generator,
            logq_correction=logq_correction,
            in_batch_prior=in_batch_prior,
        )
    raise ValueError(f"unknown softmax {softmax!r}; expected 'full' or 'sampled'")


__all__ = [
    "autoregressive_batch",
    "future_window_batch",
    "masked_count",
    "mask_batch",
    "select_targets",
    "full_softmax_loss",
    "sampled_softmax_loss",
    "pretrain_loss",
    "resolve_softmax",
]
