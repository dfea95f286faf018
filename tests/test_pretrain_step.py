"""The pretraining step's shortcuts are exact: shared [PAD] columns dropped, precision chosen by hardware."""

import pytest
import torch

from peterrec.data.sequences import trim_shared_padding
from peterrec.model.backbone import NextItNet
from peterrec.runtime import native_bf16, resolve_precision
from peterrec.tokens import PAD


def test_trim_drops_only_columns_that_are_pad_in_every_row():
    batch = torch.tensor([[0, 0, 0, 5, 6], [0, 0, 7, 8, 9]])
    assert trim_shared_padding(batch).tolist() == [[0, 5, 6], [7, 8, 9]]
    full = torch.tensor([[4, 5], [6, 7]])
    assert trim_shared_padding(full) is not None and trim_shared_padding(full).tolist() == full.tolist()
    empty = torch.zeros(2, 6, dtype=torch.long)
    assert trim_shared_padding(empty).shape == (2, 2)  # min_width columns survive
    assert trim_shared_padding(empty, min_width=1).shape == (2, 1)


@pytest.mark.parametrize("causal", [True, False])
def test_backbone_outputs_at_real_positions_do_not_change_when_shared_padding_is_dropped(causal):
    torch.manual_seed(0)
    backbone = NextItNet(30, 8, dilations=(1, 2), kernel_size=3, causal=causal).double()
    seqs = torch.full((3, 12), PAD, dtype=torch.long)
    seqs[0, -5:] = torch.randint(4, 34, (5,))
    seqs[1, -3:] = torch.randint(4, 34, (3,))
    seqs[2, -7:] = torch.randint(4, 34, (7,))
    trimmed = trim_shared_padding(seqs)
    assert trimmed.shape[1] == 7
    full = backbone(seqs)[:, -7:]
    short = backbone(trimmed)
    real = trimmed != PAD
    assert (full[real] - short[real]).abs().max() < 1e-12


def test_precision_auto_follows_the_hardware():
    cpu = torch.device("cpu")
    assert isinstance(native_bf16(cpu), bool)
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert native_bf16(torch.device("meta")) is False
