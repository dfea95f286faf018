"""Candidate samplers for sampled softmax: which negative items a training step scores.

Each sampler draws columns (item id - 4) with replacement from a fixed distribution q and reports log q,
which the loss subtracts (logQ correction). ``log_uniform`` assumes columns ordered by descending
frequency, which is how the vocabulary is built.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from peterrec.choices import SAMPLER_NAMES, SamplerName


class CandidateSampler:
    """Draws negative columns (0..num_items-1) with replacement from a fixed distribution q."""

    def __init__(self, log_probs: torch.Tensor):
        self.num_items = int(log_probs.numel())
        self._log_probs = log_probs.float()
        self._probs = log_probs.double().exp()
        self._per_device: dict[torch.device, torch.Tensor] = {}

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """``num_samples`` columns drawn independently from q (a CPU LongTensor)."""
        return torch.multinomial(self._probs, num_samples, replacement=True, generator=generator)

    def log_prob(self, columns: torch.Tensor) -> torch.Tensor:
        """log q(column) of a single draw, on the device of ``columns``."""
        table = self._per_device.get(columns.device)
        if table is None:
            table = self._per_device[columns.device] = self._log_probs.to(columns.device)
        return table[columns]

    def probs(self) -> torch.Tensor:
        """q over all columns (CPU, float64)."""
        return self._probs

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_items={self.num_items})"


class UniformSampler(CandidateSampler):
    """q(k) = 1 / num_items."""

    def __init__(self, num_items: int):
        _check_num_items(num_items)
        super().__init__(torch.full((num_items,), -math.log(num_items)))

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.num_items, (num_samples,), generator=generator)


class LogUniformSampler(CandidateSampler):
    """Zipfian over rank, as TensorFlow's ``log_uniform_candidate_sampler``.

    q(k) = (log(k + 2) - log(k + 1)) / log(num_items + 1). It matches item popularity only when
    columns are ordered by descending frequency, which is how the vocabulary is built.
    """

    def __init__(self, num_items: int):
        _check_num_items(num_items)
        k = torch.arange(num_items, dtype=torch.float64)
        probs = (torch.log(k + 2) - torch.log(k + 1)) / math.log(num_items + 1)
        super().__init__(probs.log())

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        # Inverse CDF: floor(exp(u * log(n + 1))) - 1 has exactly the distribution above.
        u = torch.rand(num_samples, generator=generator, dtype=torch.float64)
        columns = torch.floor(torch.exp(u * math.log(self.num_items + 1))).long() - 1
        return columns.clamp_(0, self.num_items - 1)


class PopularitySampler(CandidateSampler):
    """q(k) proportional to max(counts[k], floor) ** power (power 1: popularity, 0.75: word2vec style).

    The floor keeps items never seen in training sampleable, so their log q is finite.
    """

    def __init__(self, counts: np.ndarray | torch.Tensor, power: float = 1.0, floor: float = 1.0):
        counts = torch.as_tensor(np.asarray(counts, dtype=np.float64))
        if counts.dim() != 1 or counts.numel() < 1:
            raise ValueError(f"counts must be a non-empty 1-D array, got shape {tuple(counts.shape)}")
        if floor <= 0:
            raise ValueError(f"floor must be positive, got {floor}")
        weights = counts.clamp(min=floor) ** power
        super().__init__((weights / weights.sum()).log())


def _check_num_items(num_items: int) -> None:
    if num_items < 1:
        raise ValueError(f"num_items must be positive, got {num_items}")


def make_sampler(
    name: SamplerName,
    num_items: int,
    counts: np.ndarray | torch.Tensor | None = None,
    power: float = 1.0,
) -> CandidateSampler:
    """Build a sampler by config name: ``uniform``, ``log_uniform`` or ``popularity`` (needs ``counts``)."""
    if name == "uniform":
        return UniformSampler(num_items)
    if name == "log_uniform":
        return LogUniformSampler(num_items)
    if name == "popularity":
        if counts is None:
            raise ValueError("sampler 'popularity' needs the training counts of the items")
        if len(counts) != num_items:
            raise ValueError(f"counts has {len(counts)} entries, expected one per item ({num_items})")
        return PopularitySampler(counts, power=power)
    raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLER_NAMES)}")


__all__ = [
    "CandidateSampler",
    "LogUniformSampler",
    "PopularitySampler",
    "UniformSampler",
    "make_sampler",
]
