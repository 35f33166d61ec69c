"""Data-parallel training with PyTorch DDP, launched by torchrun; a single process needs none of it.

torchrun starts one process per rank and tells each who it is through RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Without them (a plain `sentiment-rnn train`) every helper
here is the identity for one process, so train.py reads the same either way:

    torchrun --nproc_per_node 2 -m sentiment_rnn train --config configs/default.yaml

Each rank holds a full copy of the model; DistributedDataParallel averages the gradients across ranks in
backward, so the copies take identical optimizer steps. Rank 0 alone prints and writes files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that reports progress and writes the run directory."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes: nccl on CUDA (one GPU per rank), gloo on CPU.

    Returns the device this rank trains on: cuda:LOCAL_RANK under CUDA, the given device otherwise.
    """
    if world_size() == 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """setup() for the block and teardown() after it, yielding this rank's device. A block inside another
    keeps the outer block's group: a two-stage `train` stays in one group across both stages, whose
    ranks must wait for rank 0's first-stage files."""
    if world_size() == 1:
        yield device
        return
    import torch.distributed as dist

    joined = dist.is_initialized()
    device = setup(device)
    try:
        yield device
    finally:
        if not joined:
            teardown()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself for one process; under torchrun, DistributedDataParallel around it.

    DDP copies rank 0's weights to every rank at construction and averages gradients in backward.
    Keep the unwrapped model for evaluation and saving: its state_dict has no 'module.' prefix.
    """
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _comm_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(*values: float) -> list[float]:
    """Each value summed over all ranks (train loss sums, correct counts, tokens)."""
    if world_size() == 1:
        return list(values)
    import torch.distributed as dist

    totals = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return totals.tolist()


def from_main(*values: float) -> list[float]:
    """Rank 0's values on every rank, so decisions such as early stopping are taken alike everywhere."""
    if world_size() == 1:
        return list(values)
    import torch.distributed as dist

    shared = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.broadcast(shared, src=0)
    return shared.tolist()


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def local_main_first() -> Iterator[None]:
    """Each node's first process (LOCAL_RANK 0) runs the block first, the node's other processes after it.

    The block fills datasets' caches (Arrow files named by fingerprint), which live on each node's disk;
    the other processes then read those files instead of writing the same ones at the same time. If the
    first process fails inside the block, torchrun stops the waiting ones.
    """
    if local_rank() != 0:
        barrier()
    yield
    if local_rank() == 0:
        barrier()
