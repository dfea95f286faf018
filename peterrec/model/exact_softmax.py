"""Exact full-softmax cross entropy over an item table, without keeping the (N, V) logits tensor.

``softmax_cross_entropy(hidden, weight, bias, columns)`` equals
``F.cross_entropy(hidden @ weight.T + bias, columns)`` (mean over rows) in value and in all three
gradients, but is computed by a hand-written autograd function:

- **one chunk** (``V <= chunk_items``): the logits are turned into probabilities *in place* in the
  forward pass and kept; the backward subtracts 1/N at the targets in place and does the two matmuls.
  Autograd's route (linear -> log_softmax -> nll) instead keeps the log-probabilities, writes a dense
  one-hot gradient, runs ``log_softmax_backward`` and allocates a new (N, V) tensor at each of those steps.
- **several chunks** (``V > chunk_items``): the forward streams over item chunks of ``chunk_items``
  columns, keeping a running log-sum-exp per row; the backward recomputes each chunk's logits and
  accumulates the gradients. Memory is bounded by one (N, chunk_items) block instead of (N, V), so the
  exact loss stays usable for 10^5–10^6 items; the price is one extra (N, C) x (C, V) matmul per step.

Under autocast the three matmuls run in the autocast dtype (bf16), as autocast's own ``linear`` would;
the log-sum-exp, the probabilities and the target logit stay in float32 (the default route also upcasts
the bf16 logits before its cross entropy). Gradients are returned in the inputs' dtypes.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# (N, chunk) float32 logits per block: 2**24 elements = 64 MiB. Small enough to bound the loss's peak memory
# on any machine, large enough that ML-100K/ML-1M-sized vocabularies run as one block.
DEFAULT_BLOCK_ELEMENTS = 1 << 24


def chunk_items_for(rows: int, num_items: int, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> int:
    """Items per chunk so that one (rows, chunk) float32 block holds at most ``block_elements`` values."""
    return max(1, min(num_items, block_elements // max(rows, 1)))


def softmax_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    columns: torch.Tensor,
    chunk_items: int | None = None,
) -> torch.Tensor:
    """Mean cross entropy of ``hidden @ weight.T + bias`` (N, V) against target ``columns`` (N,).

    ``chunk_items`` caps the columns scored at once (default: a 64 MiB block, see
    :func:`chunk_items_for`). An empty selection (N = 0) gives 0, still in the graph.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        shapes = f"{tuple(hidden.shape)}, {tuple(weight.shape)}"
        raise ValueError(f"hidden (N, C) and weight (V, C) disagree: {shapes}")
    if columns.shape != hidden.shape[:1]:
        raise ValueError(f"columns must be (N,) = ({hidden.shape[0]},), got {tuple(columns.shape)}")
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    if chunk_items is None:
        chunk_items = chunk_items_for(hidden.shape[0], weight.shape[0])
    if chunk_items < 1:
        raise ValueError(f"chunk_items must be >= 1, got {chunk_items}")
    return _SoftmaxCrossEntropy.apply(hidden, weight, bias, columns, int(chunk_items))


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


class _SoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, columns, chunk_items):
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype)
        device = hidden.device
        matmul = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        with _no_autocast(device):
            compute = torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 -> fp32; fp64 stays
            h, w, b = hidden.to(compute), weight.to(compute), bias.to(compute)
            matmul = matmul or compute
            hm, wm = h.to(matmul), w.to(matmul)  # no copies without autocast
            rows, num_items = h.shape[0], w.shape[0]
            target_logits = (h * w[columns]).sum(dim=1) + b[columns]
            probs = None
            if chunk_items >= num_items:
                probs = _logits(hm, wm, b, 0, num_items)
                lse = _normalise_in_place(probs)
            else:
                lse = _streamed_logsumexp(hm, wm, b, chunk_items)
            loss = (lse - target_logits).sum() / max(rows, 1)
        ctx.matmul_dtype = matmul
        ctx.chunk_items = chunk_items
        ctx.save_for_backward(hm, wm, b, columns, lse, probs if probs is not None else lse.new_empty(0))
        ctx.one_block = probs is not None
        ctx.used = False
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        if ctx.used:
            raise RuntimeError("softmax_cross_entropy's backward reuses its buffers; it runs once")
        ctx.used = True
        h, w, b, columns, lse, probs = ctx.saved_tensors
        rows = h.shape[0]
        scale = grad_loss.to(lse.dtype) / max(rows, 1)
        with _no_autocast(h.device):
            if ctx.one_block:
                grad_logits = probs.mul_(scale)
                grad_logits[torch.arange(rows, device=h.device), columns] -= scale
                grad_bias = grad_logits.sum(dim=0) if ctx.needs_input_grad[2] else None
                grad_logits = grad_logits.to(ctx.matmul_dtype)
                grad_hidden = grad_logits @ w
                grad_weight = grad_logits.t() @ h if ctx.needs_input_grad[1] else None
            else:
                grad_hidden, grad_weight, grad_bias = _streamed_backward(
                    ctx, h, w, b, columns, lse, scale, ctx.chunk_items
                )
        grads = (grad_hidden, grad_weight, grad_bias)
        out = [
            g.to(dtype) if g is not None and needed else None
            for g, dtype, needed in zip(grads, ctx.dtypes, ctx.needs_input_grad[:3], strict=True)
        ]
        return (*out, None, None)


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Float32 (or float64) logits of items ``start:stop``: the matmul in h's dtype, the bias added after.

    ``w @ h.T`` transposed is the fastest layout for an (N, C) x (C, V) product with small C on CPU.
    """
    return (w[start:stop] @ h.t()).t().to(b.dtype).add_(b[start:stop])  # .to: a no-op without autocast


def _normalise_in_place(logits: torch.Tensor) -> torch.Tensor:
    """Turn (N, V) logits into softmax probabilities in place; returns each row's log-sum-exp (N,)."""
    top = logits.amax(dim=1, keepdim=True)
    probs = logits.sub_(top).exp_()
    total = probs.sum(dim=1, keepdim=True)
    probs.div_(total)
    return (top + total.log()).squeeze(1)


def _streamed_logsumexp(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    """log sum_j exp(h @ w[j] + b[j]) per row, one (N, chunk) block of logits at a time."""
    lse = None
    for start in range(0, w.shape[0], chunk):
        part = torch.logsumexp(_logits(h, w, b, start, start + chunk), dim=1)
        lse = part if lse is None else torch.logaddexp(lse, part)
    return lse


def _streamed_backward(ctx, h, w, b, columns, lse, scale, chunk):
    """Gradients of the streamed path: each block's logits recomputed, softmax - one-hot, two matmuls."""
    grad_hidden = torch.zeros_like(h, dtype=lse.dtype)
    grad_weight = torch.empty_like(w, dtype=lse.dtype) if ctx.needs_input_grad[1] else None
    grad_bias = torch.empty_like(b) if ctx.needs_input_grad[2] else None
    rows = torch.arange(h.shape[0], device=h.device)
    for start in range(0, w.shape[0], chunk):
        stop = min(start + chunk, w.shape[0])
        grad_block = _logits(h, w, b, start, stop).sub_(lse.unsqueeze(1)).exp_().mul_(scale)
        inside = (columns >= start) & (columns < stop)
        grad_block[rows[inside], columns[inside] - start] -= scale
        if grad_bias is not None:
            torch.sum(grad_block, dim=0, out=grad_bias[start:stop])
        grad_block = grad_block.to(h.dtype)
        grad_hidden += grad_block @ w[start:stop]
        if grad_weight is not None:
            grad_weight[start:stop] = grad_block.t() @ h
    return grad_hidden, grad_weight, grad_bias


__all__ = ["DEFAULT_BLOCK_ELEMENTS", "chunk_items_for", "softmax_cross_entropy"]
