"""Running one training on several processes with torch.distributed (lesson 12).

`torchrun --nproc_per_node N -m mrcnn_edu train ...` starts N copies of the program and sets
RANK, LOCAL_RANK and WORLD_SIZE in each one's environment. Every process builds the same model,
trains on its own shard of each batch, and DDP averages the gradients before the optimizer step,
so all copies stay identical. Only rank 0 writes logs, checkpoints and metrics.

Without those variables (a plain `python -m mrcnn_edu train`) everything here degrades to a
single process: rank 0 of a world of size 1, and no process group is created.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0  # 0..world_size-1; rank 0 does the writing
    local_rank: int = 0  # index on this machine; picks the GPU
    world_size: int = 1  # number of processes in the job

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def init_distributed(device):
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else return rank 0 of 1.

    The backend follows the device: nccl for CUDA tensors, gloo for CPU tensors.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size)


def process_device(device, info):
    """The device this process trains on: its own GPU under torchrun, else `device` itself."""
    device = torch.device(device)
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def shard(indices, info):
    """This rank's share of a global batch: every world_size-th index, starting at rank."""
    return indices[info.rank :: info.world_size]


def average_across_processes(values, info, device):
    """Mean of each float in `values` (a dict) over all processes; identity for one process.

    Every rank gets the same numbers back, so decisions made from them (such as stopping on a
    NaN loss) are taken by all ranks together and none is left waiting in a collective call.
    """
    if not info.enabled:
        return dict(values)
    names = list(values)  # the same order on every rank: each built the dict the same way
    stacked = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= info.world_size
    return {n: v for n, v in zip(names, stacked.tolist())}


def barrier(info):
    """Wait until every process gets here (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def cleanup(info):
    """Leave the process group so the program exits cleanly."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
