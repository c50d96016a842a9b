"""Which process this is in a ``torchrun`` job, and the device it trains on.

A trainer uses an already initialised default process group, or initialises one
from the environment ``torchrun`` sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``; multi-node runs pass ``--nnodes``/``--node_rank``/
``--rdzv_endpoint`` to ``torchrun`` and nothing changes here): NCCL when CUDA is
available, gloo otherwise. Without either, training runs in this process alone.

Every rank builds the same trainer from the same weights, calls ``step`` with the
same global batch (it takes its own rows) and calls ``state_dict`` /
``inference_params`` (collectives under FSDP); only rank 0 (:attr:`World.is_main`)
writes checkpoints and logs.
"""

import dataclasses
import os

import torch
import torch.distributed as dist

from openpi_core.errors import InputError


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the job: global ``rank`` of ``size``, its device."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's contiguous slice of a global batch of ``batch_size`` rows.

        Raises:
            InputError: the batch does not split evenly across the ranks.
        """
        if batch_size % self.size:
            raise InputError(f"the batch size {batch_size} should be divisible by the world size {self.size}")
        per_rank = batch_size // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


def world(device: str | torch.device | None = None) -> World:
    """Join (or start, when ``WORLD_SIZE`` > 1) the default process group.

    ``device`` None: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU.
    """
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        on_gpu = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        backend = "nccl" if on_gpu else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
    rank, size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if size > 1 and device.type == "cpu" and dist.get_backend() == "nccl":
        raise InputError("a CPU trainer needs a gloo process group, found nccl")
    return World(rank=rank, size=size, device=device)
