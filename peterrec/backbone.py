"""NextItNet: stacked dilated residual convolutions over item-id sequences (Yuan et al., WSDM 2019).

Sequences are left-padded with [PAD] (id 0) so the last position holds the newest item. There is no
positional embedding. Every tensor that enters a convolution is zero at pad positions, so the outputs
of a sequence do not depend on how much padding its batch has.

All layers work channels-last, (batch, length, channels): a dilated convolution is one matmul over the
``kernel_size`` shifted copies of its input, which avoids the transposes a ``Conv1d`` would need
around every LayerNorm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from peterrec import NUM_SPECIAL_TOKENS, PAD

logger = logging.getLogger(__name__)

DEFAULT_DILATIONS = (1, 4) * 4
INIT_STD = 0.02


def trunc_normal_(tensor: torch.Tensor, std: float = INIT_STD) -> torch.Tensor:
    """Truncated normal at two standard deviations, as the original TensorFlow code initialises."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def receptive_field(dilations: Sequence[int], kernel_size: int) -> int:
    """Positions seen by one output of a stack whose blocks use dilations d and 2d."""
    return 1 + (kernel_size - 1) * sum(3 * d for d in dilations)


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


def mask_padding(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Zero the pad positions of ``x`` (B, L, C); ``keep=None`` means there are none."""
    return x if keep is None else x * keep


def padding_mask(seqs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L, 1) with 1 at real items and 0 at [PAD], or None when no position is [PAD].

    Full batches (every window of a long user, the benchmarks) then skip the mask multiplications and
    their backward entirely; the outputs are the same either way. The check costs one host sync on a GPU.
    """
    real = seqs != PAD
    if bool(real.all()):
        return None
    return real.unsqueeze(-1).to(dtype)


class ResidualBlock(nn.Module):
    """conv(d) -> LayerNorm -> ReLU -> conv(2d) -> LayerNorm -> ReLU, plus the block input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        self.conv1 = DilatedConv1d(channels, kernel_size, dilation, causal)
        self.ln1 = nn.LayerNorm(channels, eps=1e-8)
        self.conv2 = DilatedConv1d(channels, kernel_size, 2 * dilation, causal)
        self.ln2 = nn.LayerNorm(channels, eps=1e-8)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """``keep`` is (B, L, 1), 1 at real positions and 0 at [PAD]; None when the batch has no padding."""
        h = mask_padding(torch.relu(self.ln1(self.conv1(x))), keep)
        h = mask_padding(torch.relu(self.ln2(self.conv2(h))), keep)
        return x + h


class NextItNet(nn.Module):
    """The NextItNet backbone: ``backbone(seqs)`` maps a LongTensor (B, L) to hidden states (B, L, C).

    ``num_items`` counts real items; ids 0-3 are [PAD], [MASK], [CLS], [UNK] and real items start at 4,
    so the embedding has ``num_items + 4`` rows. ``dilations`` gives one entry per residual block; each
    block's second convolution uses twice its dilation, so the default ``(1, 4) * 4`` yields the
    1, 2, 4, 8 pattern four times (16 convolutions).
    """

    def __init__(
        self,
        num_items: int,
        channels: int = 64,
        dilations: Sequence[int] = DEFAULT_DILATIONS,
        kernel_size: int = 3,
        causal: bool = True,
        sparse_embedding: bool = False,
    ):
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        self.num_items = num_items
        self.channels = channels
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_size = kernel_size
        self.causal = causal
        # sparse_embedding: gradients touch only the looked-up rows (for SparseAdam on huge vocabularies)
        self.item_embedding = nn.Embedding(num_items + NUM_SPECIAL_TOKENS, channels, sparse=sparse_embedding)
        trunc_normal_(self.item_embedding.weight)
        self.blocks = nn.ModuleList(ResidualBlock(channels, kernel_size, d, causal) for d in self.dilations)

    @property
    def receptive_field(self) -> int:
        """How many positions (the current one included) can influence one output."""
        return receptive_field(self.dilations, self.kernel_size)

    def check_length(self, max_len: int) -> None:
        """Warn when sequences are longer than what the stack can see at once."""
        if max_len > self.receptive_field:
            logger.warning(
                "max_len %d exceeds the receptive field of %d positions: the oldest items of long "
                "sequences cannot influence the output; add blocks or larger dilations to use them",
                max_len,
                self.receptive_field,
            )

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        keep = padding_mask(seqs, self.item_embedding.weight.dtype)
        x = mask_padding(self.item_embedding(seqs), keep)
        for block in self.blocks:
            x = block(x, keep)
        return x

    def extra_repr(self) -> str:
        return (
            f"num_items={self.num_items}, channels={self.channels}, dilations={list(self.dilations)}, "
            f"kernel_size={self.kernel_size}, causal={self.causal}, receptive_field={self.receptive_field}"
        )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "NextItNet",
    "ResidualBlock",
    "DilatedConv1d",
    "count_parameters",
    "gather_taps",
    "mask_padding",
    "padding_mask",
    "scatter_taps",
    "tap_shifts",
    "trunc_normal_",
]
