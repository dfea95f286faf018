"""The exact full softmax without the logits tensor: value and gradients equal autograd's, memory bounded."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from peterrec.model.exact_softmax import chunk_items_for, softmax_cross_entropy
from peterrec.model.item_encoder import ItemOutput
from peterrec.training.objectives import full_softmax_loss


def _problem(rows: int, items: int, channels: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, channels, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(items, channels, generator=g, dtype=dtype).requires_grad_()
    bias = torch.randn(items, generator=g, dtype=dtype).requires_grad_()
    columns = torch.randint(0, items, (rows,), generator=g)
    return hidden, weight, bias, columns


def _reference(hidden, weight, bias, columns):
    """Today's route before this module: autograd through linear -> cross_entropy."""
    return F.cross_entropy(F.linear(hidden, weight, bias), columns)


@pytest.mark.parametrize("chunk_items", [None, 1, 7, 50, 64, 1000])
def test_value_and_all_gradients_equal_autograd_in_float64(chunk_items):
    hidden, weight, bias, columns = _problem(rows=37, items=64, channels=8)
    upstream = 1.7  # a non-unit incoming gradient must scale every gradient
    expected = _reference(hidden, weight, bias, columns)
    want = torch.autograd.grad(expected * upstream, [hidden, weight, bias])
    got_loss = softmax_cross_entropy(hidden, weight, bias, columns, chunk_items)
    got = torch.autograd.grad(got_loss * upstream, [hidden, weight, bias])
    assert abs((got_loss - expected).item()) < 1e-10
    for name, a, b in zip(("hidden", "weight", "bias"), got, want, strict=True):
        assert a.dtype == torch.float64
        assert (a - b).abs().max() < 1e-10, name


def test_repeated_targets_and_extreme_logits_stay_exact():
    hidden, weight, bias, _ = _problem(rows=20, items=30, channels=4, seed=3)
    with torch.no_grad():
        bias[5] = 80.0  # one dominant item: exp overflows in a naive implementation
    columns = torch.full((20,), 5)
    columns[::3] = 29
    for chunk in (None, 4):
        loss = softmax_cross_entropy(hidden, weight, bias, columns, chunk)
        grads = torch.autograd.grad(loss, [hidden, weight, bias])
        want = torch.autograd.grad(_reference(hidden, weight, bias, columns), [hidden, weight, bias])
        assert torch.isfinite(loss)
        assert all((a - b).abs().max() < 1e-10 for a, b in zip(grads, want, strict=True))


def test_frozen_table_gets_no_gradient_and_empty_batch_gives_zero():
    hidden, weight, bias, columns = _problem(rows=5, items=9, channels=3)
    weight.requires_grad_(False)
    bias.requires_grad_(False)
    loss = softmax_cross_entropy(hidden, weight, bias, columns, chunk_items=2)
    loss.backward()
    assert hidden.grad is not None and weight.grad is None and bias.grad is None
    empty = softmax_cross_entropy(hidden[:0], weight, bias, columns[:0])
    assert float(empty.detach()) == 0.0


def test_float32_matches_and_bf16_autocast_is_close():
    hidden, weight, bias, columns = _problem(rows=64, items=300, channels=16, dtype=torch.float32)
    want = _reference(hidden.double(), weight.double(), bias.double(), columns).detach()
    for chunk in (None, 32):
        assert abs(softmax_cross_entropy(hidden, weight, bias, columns, chunk).item() - want.item()) < 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = softmax_cross_entropy(hidden, weight, bias, columns, chunk)
        assert loss.dtype == torch.float32
        assert abs(loss.item() - want.item()) < 0.05 * want.item()
        loss.backward()
        assert weight.grad.dtype == torch.float32 and torch.isfinite(weight.grad).all()
        weight.grad = None


def test_backward_runs_once():
    hidden, weight, bias, columns = _problem(rows=4, items=6, channels=2)
    loss = softmax_cross_entropy(hidden, weight, bias, columns)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


def test_bad_shapes_are_refused():
    hidden, weight, bias, columns = _problem(rows=4, items=6, channels=2)
    with pytest.raises(ValueError, match="disagree"):
        softmax_cross_entropy(hidden[:, :1], weight, bias, columns)
    with pytest.raises(ValueError, match="columns"):
        softmax_cross_entropy(hidden, weight, bias, columns[:2])
    with pytest.raises(ValueError, match="chunk_items"):
        softmax_cross_entropy(hidden, weight, bias, columns, chunk_items=0)


def test_chunk_size_bounds_the_block():
    assert chunk_items_for(1000, 10**6, block_elements=2**20) == 1048
    assert chunk_items_for(10, 500) == 500  # a small vocabulary is one block
    assert chunk_items_for(0, 500) == 500


def test_item_output_and_full_softmax_loss_use_it():
    torch.manual_seed(0)
    out = ItemOutput(40, 8).double()
    with torch.no_grad():
        out.bias.normal_()
    hidden = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(4, 44, (3, 5))
    targets[0, :2] = 0  # [PAD]: no loss
    loss = full_softmax_loss(out, hidden, targets, chunk_items=6)
    keep = targets != 0
    want = F.cross_entropy(out(hidden[keep]), targets[keep] - 4)
    assert abs((loss - want).item()) < 1e-10
    got = torch.autograd.grad(loss, [hidden, out.weight])
    ref = torch.autograd.grad(want, [hidden, out.weight])
    assert all((a - b).abs().max() < 1e-10 for a, b in zip(got, ref, strict=True))


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and ru_maxrss in KiB (Linux)")
def test_peak_memory_is_bounded_by_the_chunk_where_logits_would_need_over_4_gb():
    """512 rows x 2.2M items: the logits alone would be 4.5 GB of float32. The chunked loss and its
    backward raise resident memory by less than the table's own gradient (563 MB) plus 0.5 GB. The
    growth is measured from the resident size just before the loss, in a child process, so the size of
    torch's own libraries (which differs between machines) does not count."""
    code = textwrap.dedent(
        """
        import json, resource, torch
        from peterrec.model.exact_softmax import softmax_cross_entropy

        def resident_bytes():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * resource.getpagesize()

        torch.manual_seed(0)
        rows, items, channels = 512, 2_200_000, 64
        weight = torch.randn(items, channels).mul_(0.02).requires_grad_()
        hidden = torch.randn(rows, channels, requires_grad=True)
        columns = torch.randint(0, items, (rows,))
        before = resident_bytes()
        loss = softmax_cross_entropy(hidden, weight, None, columns, chunk_items=65536)
        loss.backward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        finite = bool(torch.isfinite(weight.grad).all())
        print(json.dumps({"loss": float(loss.detach()), "growth": peak - before, "finite": finite}))
        """
    )
    logits_bytes = 512 * 2_200_000 * 4
    assert logits_bytes > 4 * 1024**3
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["finite"]
    assert 14.0 < result["loss"] < 15.5  # about log(2.2M) = 14.6 for near-uniform logits
    gradient_bytes = 2_200_000 * 64 * 4
    assert result["growth"] < gradient_bytes + 0.5 * 1024**3, result["growth"] / 1024**3
