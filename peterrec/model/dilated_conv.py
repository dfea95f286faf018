"""The dilated 1-D convolution of NextItNet, channels-last, with a hand-written backward.

A dilated convolution on (B, L, C) is one matmul over ``kernel_size`` shifted copies ("taps") of its
input, which avoids the transposes a ``Conv1d`` would need around every LayerNorm. Autograd's version of
the same computation (pad, k slices, concatenation, linear) zero-fills a padded gradient buffer and copies
through every slice in backward; :class:`_DilatedConvFunction` computes the input gradient as one matmul
and k - 1 shifted in-place additions, and skips weight/bias gradients of frozen layers (which then keep
no taps alive for backward).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from peterrec.model.init import trunc_normal_


def tap_shifts(kernel_size: int, dilation: int, causal: bool) -> tuple[int, ...]:
    """How far back each tap of a dilated convolution reads: tap j at output t reads input t - shifts[j].

    Causal: ``((k-1)·d, ..., d, 0)``, the last tap is the current position. Non-causal: centred, so the
    shifts run from ``(k-1)·d/2`` down to ``-(k-1)·d/2`` (negative shifts read later positions).
    """
    span = (kernel_size - 1) * dilation
    first = span if causal else span // 2
    return tuple(first - j * dilation for j in range(kernel_size))


def _check_shifts(shifts: Sequence[int]) -> tuple[int, int]:
    """(dilation, span) of tap shifts that step down evenly through 0, as :func:`tap_shifts` makes them."""
    dilation = shifts[0] - shifts[1] if len(shifts) > 1 else 1
    evenly = all(a - b == dilation for a, b in zip(shifts, shifts[1:], strict=False))
    if dilation < 1 or not evenly or 0 not in shifts:
        raise ValueError(f"tap shifts must step down evenly through 0, got {tuple(shifts)}")
    return dilation, shifts[0] - shifts[-1]


def gather_taps(x: torch.Tensor, shifts: Sequence[int]) -> torch.Tensor:
    """(B, L, C) -> (B, L, k, C): tap j holds x shifted by ``shifts[j]`` positions, zeros shifted in.

    One pad and one copy: the taps are a strided view of the padded input (a window of span + 1 positions
    at every t, every ``dilation``-th of them), made contiguous in tap-major order.
    """
    dilation, span = _check_shifts(shifts)
    padded = F.pad(x, (0, 0, shifts[0], -shifts[-1]))
    return padded.unfold(1, span + 1, 1)[..., ::dilation].transpose(2, 3).contiguous()


def scatter_taps(grad_taps: torch.Tensor, shifts: Sequence[int]) -> torch.Tensor:
    """The adjoint of :func:`gather_taps`: (B, L, k, C) -> (B, L, C), each tap's gradient shifted back.

    Starts from the unshifted tap (one copy, no zero fill) and adds the others in place.
    """
    _check_shifts(shifts)
    length = grad_taps.shape[1]
    centre = shifts.index(0)
    grad_x = grad_taps[:, :, centre].clone(memory_format=torch.contiguous_format)
    for j, shift in enumerate(shifts):
        if j == centre or abs(shift) >= length:
            continue  # the unshifted tap is already in; a tap shifted past the sequence reads only zeros
        if shift > 0:
            grad_x[:, : length - shift] += grad_taps[:, shift:, j]
        else:
            grad_x[:, -shift:] += grad_taps[:, : length + shift, j]
    return grad_x


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in here (its lower precision when enabled, else x's)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class _DilatedConvFunction(torch.autograd.Function):
    """``taps(x) @ weight.T + bias`` with a hand-written backward.

    Autograd's version of the same computation (pad, k slices, concatenation, linear) zero-fills a padded
    gradient buffer and copies through every slice and the concatenation in backward. Here the gradient
    of the input is one matmul and k - 1 shifted in-place additions, and weight/bias gradients are
    computed only when those tensors require them (frozen layers skip them).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, shifts):
        dtype = _compute_dtype(x)
        batch, length, channels = x.shape
        taps = gather_taps(x.to(dtype), shifts).view(batch * length, -1)
        weight_c, bias_c = weight.to(dtype), bias.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            out = torch.addmm(bias_c, taps, weight_c.t())
        # The taps are only needed for the weight gradient: a frozen conv keeps B·L·k·C fewer floats alive.
        ctx.save_for_backward(taps if ctx.needs_input_grad[1] else None, weight_c)
        ctx.shifts, ctx.shape = shifts, (batch, length, channels)
        ctx.input_dtype = x.dtype
        return out.view(batch, length, -1)

    @staticmethod
    @torch.autograd.function.once_differentiable  # second derivatives would miss the taps' dependence on x
    def backward(ctx, grad_out):
        taps, weight = ctx.saved_tensors
        batch, length, channels = ctx.shape
        grad = grad_out.reshape(batch * length, -1).to(weight.dtype)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_taps = (grad @ weight).view(batch, length, len(ctx.shifts), channels)
            grad_x = scatter_taps(grad_taps, ctx.shifts).to(ctx.input_dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t() @ taps
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias, None


class DilatedConv1d(nn.Module):
    """A 1-D dilated convolution on (B, L, C) input; causal reads only the past, non-causal is centred.

    Positions outside the sequence read zeros (the same as zero padding of (k-1)·d on the left when
    causal, half of it on each side otherwise).
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        if not causal and kernel_size % 2 == 0:
            raise ValueError("a non-causal convolution needs an odd kernel_size to stay centred")
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.causal = causal
        self.shifts = tap_shifts(kernel_size, dilation, causal)
        # weight[:, j*C:(j+1)*C] is tap j; tap kernel_size-1 is the current position when causal.
        self.weight = nn.Parameter(trunc_normal_(torch.empty(channels, kernel_size * channels)))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _DilatedConvFunction.apply(x, self.weight, self.bias, self.shifts)


__all__ = ["DilatedConv1d", "gather_taps", "scatter_taps", "tap_shifts"]
