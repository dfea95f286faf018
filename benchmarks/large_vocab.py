"""Row 6: pretraining with a very large vocabulary (sampled softmax), run in its own process.

``python -m benchmarks.large_vocab --items 1000000 --channels 64 --steps 200`` prints one JSON line with the
median step time and the process's peak resident memory (``ru_maxrss``), so the parent's allocations never
count. ``run.py`` starts it as a subprocess.

Dense baseline: ``nn.Embedding`` and ``ItemOutput`` produce dense (V+4)×C and V×C gradients every step, and
``torch.optim.Adam`` then reads and writes parameter, gradient, exp_avg and exp_avg_sq of both tables in full:
the step time grows with V although only B·L + S rows are touched. If ``NextItNet`` grows a
``sparse_embedding`` argument (and ``ItemOutput`` a ``sparse`` one), this benchmark uses it: every parameter
whose gradient comes back sparse is stepped by ``torch.optim.SparseAdam``, the rest by ``Adam``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import statistics
import time

import torch

from benchmarks.common import synchronize
from peterrec import NUM_SPECIAL_TOKENS
from peterrec.allocator import tune_cpu_allocator
from peterrec.model.backbone import NextItNet
from peterrec.model.item_encoder import ItemOutput
from peterrec.training.objectives import autoregressive_batch, pretrain_loss
from peterrec.training.samplers import LogUniformSampler
from peterrec.training.trainer import dense_adam


def _supports(cls: type, argument: str) -> bool:
    return argument in inspect.signature(cls).parameters


def run(
    items: int, channels: int, steps: int, batch: int, length: int, samples: int, warmup: int, device: str
) -> dict:
    torch.manual_seed(0)
    sparse_backbone = _supports(NextItNet, "sparse_embedding")
    sparse_output = _supports(ItemOutput, "sparse")
    backbone_kwargs = {"sparse_embedding": True} if sparse_backbone else {}
    output_kwargs = {"sparse": True} if sparse_output else {}
    backbone = NextItNet(items, channels, **backbone_kwargs)
    output = ItemOutput(items, channels, **output_kwargs)
    backbone.to(device)
    output.to(device)
    params = [*backbone.parameters(), *output.parameters()]
    sampler = LogUniformSampler(items)
    generator = torch.Generator().manual_seed(0)

    # Zipf-like ids (log-uniform over the frequency-ordered vocabulary), as a real click log would give.
    def batch_ids() -> torch.Tensor:
        columns = sampler.sample(batch * (length + 1), generator).view(batch, length + 1)
        return (columns + NUM_SPECIAL_TOKENS).to(device)

    def loss_of(seqs: torch.Tensor) -> torch.Tensor:
        inputs, targets = autoregressive_batch(seqs)
        hidden = backbone(inputs)
        return pretrain_loss(
            output,
            hidden,
            targets,
            softmax="sampled",
            sampler=sampler,
            num_samples=samples,
            generator=generator,
        )

    # One backward tells which parameters get sparse gradients; those go to SparseAdam.
    loss_of(batch_ids()).backward()
    sparse = [p for p in params if p.grad is not None and p.grad.is_sparse]
    dense = [p for p in params if not (p.grad is not None and p.grad.is_sparse)]
    optimizers: list[torch.optim.Optimizer] = [dense_adam(dense, lr=1e-3)]
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=1e-3))

    times = []
    for i in range(warmup + steps):
        seqs = batch_ids()
        start = time.perf_counter()
        loss = loss_of(seqs)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "items": items,
        "channels": channels,
        "batch": batch,
        "length": length,
        "num_samples": samples,
        "steps": steps,
        "median_step_s": statistics.median(times),
        "peak_rss_gib": peak_kib / 2**20,
        "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
        "device": device,
        "sparse_embedding": sparse_backbone,
        "sparse_output": sparse_output,
        "sparse_params": sum(p.numel() for p in sparse),
        "loss": float(loss.detach()),
    }


def main() -> None:
    tune_cpu_allocator()  # as the peterrec command line does, for both sides of every comparison
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(
        json.dumps(
            run(
                args.items,
                args.channels,
                args.steps,
                args.batch,
                args.length,
                args.samples,
                args.warmup,
                args.device,
            )
        )
    )


if __name__ == "__main__":
    main()
