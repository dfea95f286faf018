"""Prompt tuning: k trainable soft item vectors placed before every sequence's oldest click.

Sequences are left-padded, so each row is ``[PAD ... PAD, i1 ... in]``; the prompts go between the padding
and ``i1`` (for a causal backbone: before the oldest click, so every position can read them). The backbone
runs on ``L + k`` positions and returns the last ``L`` (see ``NextItNet.forward``), so callers see the shape
they gave.
Unlike the other kinds, prompt tuning is not the identity at initialisation: the prompts are new context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peterrec.model.adapters.base import Adapter, AdapterModule, check_positive_int
from peterrec.model.init import trunc_normal_


class SoftPrompt(AdapterModule):
    """Inserts ``prompts`` (k, C) right before each row's first real position."""

    def __init__(self, length: int, channels: int):
        super().__init__()
        self.prompts = nn.Parameter(trunc_normal_(torch.empty(length, channels)))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, channels = x.shape
        k = len(self.prompts)
        real = keep.squeeze(-1) if keep is not None else x.new_ones(batch, length)
        start = length - real.sum(dim=1).long()  # first real position of each row (left padding)
        positions = torch.arange(length + k, device=x.device).unsqueeze(0)
        in_prompt = (positions >= start.unsqueeze(1)) & (positions < start.unsqueeze(1) + k)
        after = positions >= start.unsqueeze(1) + k
        source = torch.where(after, positions - k, positions).clamp(max=length - 1)
        shifted = x.gather(1, source.unsqueeze(-1).expand(batch, length + k, channels))
        prompt_index = (positions - start.unsqueeze(1)).clamp(0, k - 1)
        prompts = self.prompts.to(x.dtype)[prompt_index]
        out = torch.where(in_prompt.unsqueeze(-1), prompts, torch.where(after.unsqueeze(-1), shifted, 0.0))
        new_keep = (in_prompt | after).unsqueeze(-1).to(x.dtype)
        return out, new_keep


@dataclass
class PromptOptions:
    """``length``: how many soft prompt vectors."""

    length: int = 4

    def __post_init__(self) -> None:
        check_positive_int("length", self.length)


class PromptAdapter(Adapter):
    """Prompt tuning: the only trainable backbone tensors are the prompts (``layers`` does not apply)."""

    kind = "prompt"
    Options = PromptOptions
    shape = "input"

    def attach(self, backbone) -> list[str]:
        reference = next(backbone.parameters())
        backbone.input_adapters.append(SoftPrompt(self.options.length, backbone.channels).to(reference))
        return [f"input_adapters.{len(backbone.input_adapters) - 1}.prompts"]

    @classmethod
    def parameter_count(cls, channels: int, options: PromptOptions, num_layers: int) -> int:
        return options.length * channels


__all__ = ["PromptAdapter", "PromptOptions", "SoftPrompt"]
