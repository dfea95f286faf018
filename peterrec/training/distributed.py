"""Data-parallel training across processes (``torchrun``), with DDP.

``torchrun --nproc_per_node=N -m peterrec pretrain ...`` starts N processes; each reads the data, builds
the same model (same seed), and takes its shard of every global batch (rows ``rank::N``). Gradients are
averaged by DDP; each rank scales its mean loss by its share of the global batch's loss terms, so the
update equals the one-process update on the whole global batch. Rank 0 validates, decides early
stopping and broadcasts the decision; only rank 0 writes files and logs. Backends: ``gloo`` on CPU,
``nccl`` on CUDA (sparse item tables need ``gloo``). Outside ``torchrun`` everything here is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from peterrec import errors
from peterrec.errors import ConfigError, PeterRecError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a data-parallel job (``world_size`` 1: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, value: float) -> float:
        """The sum of ``value`` over all ranks."""
        return self.sum_all([value])[0]

    def sum_all(self, values: list[float]) -> list[float]:
        """Element-wise sums over all ranks, in one collective."""
        if not self.active:
            return list(values)
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.tolist()

    def on_main(self, fn):
        """``fn()`` on rank 0 only, its result (or its user error) on every rank."""
        if not self.active:
            return fn()
        outcome = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except PeterRecError as exc:
                outcome = ("error", type(exc).__name__, str(exc))
        outcome = self.broadcast(outcome)
        if outcome[0] == "error":
            raise getattr(errors, outcome[1], PeterRecError)(outcome[2])
        return outcome[1]

    def finish(self, write):
        """Run ``write()`` on rank 0 while the others wait, leave the process group together, and return
        its result on rank 0 (None elsewhere). A single process just returns ``write()``."""
        result = self.on_main(write)
        self.close()
        return result if self.is_main else None

    def close(self) -> None:
        """Leave the process group together: no rank exits (tearing down gloo) while another still works."""
        if self.active and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def shard(self, rows):
        """This rank's share of a global batch: every ``world_size``-th row from ``rank``."""
        return rows[self.rank :: self.world_size] if self.active else rows

    def wrap(self, module: nn.Module, sparse: set[int] = frozenset()) -> nn.Module:
        """``module`` in DDP when distributed (gradients averaged over ranks), else itself.

        Parameters whose ids are in ``sparse`` (item tables with sparse row gradients) are left out of DDP,
        whose buckets hold dense gradients only; :meth:`average_sparse_gradients` reduces them instead.
        """
        if not self.active:
            return module
        ignored = [name for name, p in module.named_parameters() if id(p) in sparse]
        if ignored:
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
        device_ids = [self.local_rank] if dist.get_backend() == "nccl" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def average_sparse_gradients(self, params: list[nn.Parameter]) -> None:
        """Average the sparse gradients of ``params`` over the ranks, as DDP does for dense ones.

        Each rank's rows travel by dense ``all_gather`` (padded to the largest row count) and every rank
        sums them in rank order, so all ranks hold the same gradient. Dense collectives are the ones every
        backend exercises; gloo's sparse all-reduce aborted a rank now and then on a loaded 2-core machine.
        A parameter without a gradient on this rank takes part with no rows, so the ranks stay in step.
        """
        if not self.active:
            return
        for p in params:
            p.grad = self._sparse_mean(p)

    def _sparse_mean(self, p: nn.Parameter) -> torch.Tensor:
        if p.grad is None:
            no_rows = torch.zeros(1, 0, dtype=torch.long, device=p.device)
            grad = torch.sparse_coo_tensor(no_rows, p.new_zeros(0, *p.shape[1:]), p.shape)
        else:
            grad = p.grad.coalesce()
        indices, values = grad.indices(), grad.values()
        counts = [int(c) for c in self._gather(torch.tensor([len(values)], device=values.device))]
        missing = max(counts) - len(values)  # pad to the largest count: all_gather needs one shape
        indices = torch.cat([indices, indices.new_zeros(indices.shape[0], missing)], dim=1)
        values = torch.cat([values, values.new_zeros(missing, *values.shape[1:])])
        ranks = zip(self._gather(indices), self._gather(values), counts, strict=True)
        kept = [(ix[:, :k], v[:k]) for ix, v, k in ranks]
        summed = torch.sparse_coo_tensor(
            torch.cat([ix for ix, _ in kept], dim=1), torch.cat([v for _, v in kept]), grad.shape
        )
        return (summed / self.world_size).coalesce()

    def _gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """``tensor`` from every rank, in rank order (the same shape on every rank)."""
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor.contiguous())
        return out


SINGLE = Distributed()


def from_environment(device: torch.device, sparse: bool = False) -> Distributed:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), once."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    backend = "nccl" if device.type == "cuda" else "gloo"
    if sparse and backend == "nccl":
        raise ConfigError(
            "model.sparse_embedding: sparse item tables train data-parallel only with gloo (CPU); "
            "use train.device: cpu or dense tables on GPUs"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    context = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if not context.is_main:
        logging.getLogger("peterrec").setLevel(logging.WARNING)  # only rank 0 logs progress
    return context


def device_for(context: Distributed, device: torch.device) -> torch.device:
    """Each rank's own GPU (``LOCAL_RANK``); the CPU stays the CPU."""
    if device.type == "cuda" and context.active:
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return device


class StepModule(nn.Module):
    """Routes a training step through one module call, so DDP sees the forward that produces the loss."""

    def __init__(self, model: nn.Module, step_loss):
        super().__init__()
        self.model = model
        self.step_loss = step_loss

    def forward(self, epoch: int, step: int, generator: torch.Generator):
        return self.step_loss(epoch, step, generator)


__all__ = ["SINGLE", "Distributed", "StepModule", "device_for", "from_environment"]
