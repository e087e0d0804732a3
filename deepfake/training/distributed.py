"""Multi-process training helpers (``torchrun``, on one machine or several), no-ops in a single process.

``torchrun`` starts copies of the same entry point with ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` in their environment (on several machines, ``torchrun --nnodes`` on each, met
through a rendezvous); ``setup`` joins them into a process group (NCCL on CUDA, gloo on CPU).
``LOCAL_RANK``, a process's number on its machine, selects its GPU and nothing else: data
shares, seeds and the one writer use the global rank. Rank 0 logs and writes files; metrics are
computed on everything the ranks saw, gathered with ``gather_arrays``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job.

    Attributes:
        rank: global rank (0 logs and checkpoints).
        local_rank: rank on this machine (selects the GPU).
        world_size: number of processes.
        owns_group: ``setup`` created the process group (and ``teardown`` destroys it).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """``RANK`` set by torchrun (0 when absent): known before the process group is joined."""
    return int(os.environ.get("RANK", "0"))


def setup(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment; single process otherwise.

    Args:
        device: the training device setting; CPU training uses gloo even on a CUDA machine.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size(), owns_group=False
        )
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run a single process")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, local_rank, world, owns_group=True)


def teardown(info: DistInfo) -> None:
    """Destroy the process group ``setup`` created."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_arrays(info: DistInfo, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenate each array over the ranks (rank order); identity in a single process."""
    if not info.enabled:
        return arrays
    parts = all_gather_objects(tuple(np.asarray(a) for a in arrays), info)
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(arrays)))


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
