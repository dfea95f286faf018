"""The hand-written dilated convolution against torch's own ``conv1d``, and the fast paths around it.

``DilatedConv1d`` builds its shifted taps and its backward by hand (see ``peterrec.backbone``) for speed;
these tests pin it to an independent reference, ``F.conv1d`` on channels-first input with explicit zero
padding, in float64 so any indexing mistake shows as a large difference, not as rounding.
"""

import pytest
import torch
import torch.nn.functional as F

from peterrec import PAD
from peterrec.model.backbone import NextItNet
from peterrec.model.dilated_conv import DilatedConv1d, gather_taps, scatter_taps, tap_shifts
from peterrec.model.item_encoder import ItemEncoder
from peterrec.training.trainer import dense_adam

padding_mask = ItemEncoder.padding_mask


def _reference(conv: DilatedConv1d, x: torch.Tensor) -> torch.Tensor:
    """The same convolution with ``F.conv1d``: weight (C, k·C) tap-major -> (C_out, C_in, k)."""
    channels, k = conv.bias.numel(), conv.kernel_size
    weight = conv.weight.view(channels, k, channels).permute(0, 2, 1)
    span = (k - 1) * conv.dilation
    padding = (span, 0) if conv.causal else (span // 2, span // 2)
    padded = F.pad(x.transpose(1, 2), padding)
    return F.conv1d(padded, weight, conv.bias, dilation=conv.dilation).transpose(1, 2)


def _grads(fn, tensors, upstream):
    for t in tensors:
        t.grad = None
    (fn() * upstream).sum().backward()
    return [t.grad.clone() for t in tensors]


# Non-causal convolutions need an odd kernel to stay centred.
@pytest.mark.parametrize("causal,kernel_size", [(True, 2), (True, 3), (True, 5), (False, 3), (False, 5)])
@pytest.mark.parametrize("dilation", [1, 2, 8])
@pytest.mark.parametrize("length", [1, 6, 40])
def test_matches_conv1d_forward_and_backward(causal, kernel_size, dilation, length):
    torch.manual_seed(0)
    conv = DilatedConv1d(6, kernel_size, dilation, causal).double()
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(3, length, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, length, 6, dtype=torch.float64)
    tensors = [x, conv.weight, conv.bias]
    ours = _grads(lambda: conv(x), tensors, upstream)
    reference = _grads(lambda: _reference(conv, x), tensors, upstream)
    assert torch.allclose(conv(x), _reference(conv, x), atol=1e-12)
    for got, want in zip(ours, reference, strict=True):
        assert torch.allclose(got, want, atol=1e-12)


def test_double_backward_is_refused_not_silently_wrong():
    conv = DilatedConv1d(4, 3, 1, causal=True)
    x = torch.randn(2, 5, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(conv(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        grad.sum().backward()


def test_tap_shifts():
    assert tap_shifts(3, 4, causal=True) == (8, 4, 0)
    assert tap_shifts(3, 4, causal=False) == (4, 0, -4)
    assert tap_shifts(2, 1, causal=True) == (1, 0)


@pytest.mark.parametrize("shifts", [(3, 1, -1), (0, 1), (2, 1, 1)])
def test_uneven_or_off_centre_shifts_are_refused(shifts):
    with pytest.raises(ValueError, match="step down evenly through 0"):
        gather_taps(torch.zeros(1, 4, 2), shifts)


def test_scatter_is_the_adjoint_of_gather():
    # <gather(x), y> == <x, scatter(y)> for every x, y: the backward is the exact transpose of the forward.
    torch.manual_seed(1)
    shifts = (6, 3, 0, -3)
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    y = torch.randn(2, 9, 4, 4, dtype=torch.float64)
    assert torch.allclose((gather_taps(x, shifts) * y).sum(), (x * scatter_taps(y, shifts)).sum())


def test_frozen_weights_get_no_gradient_and_input_gradient_is_unchanged():
    torch.manual_seed(2)
    conv = DilatedConv1d(5, 3, 2, causal=True).double()
    x = torch.randn(2, 7, 5, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 7, 5, dtype=torch.float64)
    conv.requires_grad_(False)
    (want,) = _grads(lambda: _reference(conv, x), [x], upstream)
    x.grad = None
    (conv(x) * upstream).sum().backward()
    assert conv.weight.grad is None and conv.bias.grad is None
    assert torch.allclose(x.grad, want, atol=1e-12)


def test_bf16_autocast_computes_in_bf16_and_keeps_fp32_gradients():
    torch.manual_seed(3)
    conv = DilatedConv1d(16, 3, 1, causal=True)
    x = torch.randn(4, 10, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    reference = _reference(conv, x.detach())
    assert torch.allclose(out.float(), reference, atol=0.05, rtol=0.05)


def test_padding_mask_is_skipped_only_without_padding():
    full = torch.tensor([[5, 6, 7], [8, 9, 10]])
    assert padding_mask(full, torch.float32) is None
    padded = full.clone()
    padded[0, 0] = PAD
    mask = padding_mask(padded, torch.float32)
    assert mask.shape == (2, 3, 1) and mask[0, 0, 0] == 0 and mask.sum() == 5


@pytest.mark.parametrize("causal", [True, False])
def test_a_batch_with_padding_gives_unpadded_rows_the_same_output(causal):
    # Row 1 is full length in both batches; only the second batch has a padded row, so it takes the mask
    # path while the first skips it. Row 1's outputs must agree.
    torch.manual_seed(4)
    model = NextItNet(40, channels=8, dilations=(1, 2), causal=causal).eval()
    full = torch.randint(4, 44, (2, 12))
    mixed = full.clone()
    mixed[0, :5] = PAD
    with torch.no_grad():
        assert torch.equal(model(full)[1], model(mixed)[1])


def test_fused_adam_matches_plain_adam():
    torch.manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(30, 7)), torch.nn.Parameter(torch.randn(7))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused, plain = (
        dense_adam(params, lr=1e-2, weight_decay=0.01),
        torch.optim.Adam(twins, 1e-2, weight_decay=0.01),
    )
    assert fused.defaults["fused"] is True
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for group, grad in zip((params, twins), (grads, grads), strict=True):
            for p, g in zip(group, grad, strict=True):
                p.grad = g.clone()
        fused.step()
        plain.step()
    for p, twin in zip(params, twins, strict=True):
        assert torch.allclose(p, twin, atol=1e-6)
