"""Timing, FLOP counting and machine description shared by the benchmark rows."""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class Sizes:
    """Problem sizes of one benchmark run; ``--quick`` shrinks everything to a smoke test of seconds."""

    batch: int = 64
    length: int = 50
    vocab: int = 1682
    channels: tuple[int, ...] = (64, 256)
    dilations: tuple[int, ...] = (1, 4) * 4
    kernel_size: int = 3
    warmup: int = 3
    repeats: int = 25
    matmul_n: int = 2048
    finetune_classes: int = 2
    eval_users: int = 2048
    eval_vocabs: tuple[int, ...] = (1682, 100_000)
    eval_batch: int = 256
    large_vocab: int = 1_000_000
    large_channels: int = 64
    large_steps: int = 200
    large_samples: int = 1024
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            batch=8,
            length=20,
            vocab=300,
            channels=(16, 32),
            warmup=1,
            repeats=3,
            matmul_n=256,
            eval_users=64,
            eval_vocabs=(300, 5_000),
            eval_batch=32,
            large_vocab=20_000,
            large_channels=16,
            large_steps=5,
            large_samples=64,
        )


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a timer read afterwards covers it (a no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], warmup: int, repeats: int, device: str = "cpu") -> float:
    """Median seconds of ``fn()`` after ``warmup`` untimed calls."""
    return interleaved({"_": fn}, warmup, repeats, device)["_"]


def interleaved(
    fns: dict[str, Callable[[], object]], warmup: int, repeats: int, device: str = "cpu"
) -> dict[str, float]:
    """Median seconds of each function, timed round-robin (see :func:`interleaved_samples`)."""
    return medians(interleaved_samples(fns, warmup, repeats, device))


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    """The median of each function's timings."""
    return {name: statistics.median(values) for name, values in samples.items()}


def interleaved_samples(
    fns: dict[str, Callable[[], object]], warmup: int, repeats: int, device: str = "cpu"
) -> dict[str, list[float]]:
    """Seconds of every timed call of each function, timed round-robin (A B C A B C ...).

    Interleaving makes the ratios between the functions fair on a machine whose speed drifts (thermal
    limits, other load): every function sees the same mix of good and bad moments. On a GPU each call
    is synchronised before the clock stops.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return samples


def ratio_ci(numerator: list[float], denominator: list[float], draws: int = 2000) -> tuple[float, float]:
    """Bootstrap 95% interval of median(numerator) / median(denominator), resampling each side's timings."""
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(numerator, k=len(numerator)))
        / statistics.median(rng.choices(denominator, k=len(denominator)))
        for _ in range(draws)
    )
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]


def spread(values: list[float]) -> str:
    """Median and interquartile range in ms, so a reader sees how noisy the machine was."""
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return f"{median * 1e3:.2f} ms/step (IQR {q1 * 1e3:.1f}–{q3 * 1e3:.1f})"


# ------------------------------------------------------------------------------------------------- FLOPs


def conv_flops(batch: int, length: int, channels: int, kernel_size: int, num_convs: int) -> float:
    """Forward FLOPs of ``num_convs`` dilated convolutions C -> C: 2·B·L·(k·C)·C each (multiply + add)."""
    return num_convs * 2.0 * batch * length * kernel_size * channels * channels


def output_flops(batch: int, length: int, channels: int, vocab: int) -> float:
    """Forward FLOPs of the full-softmax output layer on every position: 2·B·L·C·V."""
    return 2.0 * batch * length * channels * vocab


def pretrain_step_flops(sizes: Sizes, channels: int) -> float:
    """FLOPs of one pretraining step: forward ×3 (forward, input gradients, weight gradients)."""
    num_convs = 2 * len(sizes.dilations)
    forward = conv_flops(sizes.batch, sizes.length, channels, sizes.kernel_size, num_convs)
    forward += output_flops(sizes.batch, sizes.length, channels, sizes.vocab)
    return 3.0 * forward


def matmul_peak(n: int, dtype: torch.dtype, device: str = "cpu", warmup: int = 2, repeats: int = 7) -> float:
    """Achieved GFLOP/s of an n×n by n×n matmul in ``dtype`` (2·n³ FLOPs): the practical peak."""
    a = torch.randn(n, n).to(device=device, dtype=dtype)
    b = torch.randn(n, n).to(device=device, dtype=dtype)
    seconds = timed(lambda: torch.mm(a, b), warmup, repeats, device)
    return 2.0 * n**3 / seconds / 1e9


# ------------------------------------------------------------------------------------------------ machine


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
