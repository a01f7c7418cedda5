"""Where a run computes: the device a setting names (auto, cpu, cuda, cuda:N, mps), and the process group of a
data-parallel run launched by ``torchrun`` (rank, world size, which process writes, sharing results between them).

A process started without torchrun is a world of one: no process group, and every helper here is a no-op for it.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def pick_device(name: str = "auto") -> torch.device:
    """The device to train on; a name this machine cannot use is a ValueError (PyTorch would fail later, deep
    inside the first ``.to(device)``)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine; use device=auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS (Apple GPU) is not available on this machine; use device=auto or cpu")
    return device


@dataclass(frozen=True)
class World:
    """The processes training one model: this one's rank among ``size``, and the backend joining them (None
    for a single process)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and exports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def describe(self, device: torch.device) -> str:
        if not self.distributed:
            return f"training on 1 process ({device})"
        return f"training on {self.size} processes ({self.backend}, {device.type})"


SINGLE = World()


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def is_main_process() -> bool:
    """Whether this process is rank 0 (or not part of a torchrun launch), known before any process group exists."""
    return os.environ.get("RANK", "0") == "0"


def world_from_env(device_name: str = "auto") -> tuple[World, torch.device]:
    """This process's place in a torchrun launch and its device: under CUDA each rank uses cuda:LOCAL_RANK (nccl),
    on the CPU all use the CPU (gloo)."""
    try:
        rank, local_rank, size = (int(os.environ[name]) for name in TORCHRUN_VARIABLES)
    except ValueError:
        raise ValueError(f"torchrun's {', '.join(TORCHRUN_VARIABLES)}: expected whole numbers, got "
                         f"{', '.join(os.environ[name] for name in TORCHRUN_VARIABLES)}") from None
    wants_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if wants_cuda:
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"device {device_name!r}: local rank {local_rank} needs cuda:{local_rank}, but this "
                             f"machine has {count} CUDA device(s); use --nproc_per_node={count} or less")
        return World(rank, local_rank, size, "nccl"), torch.device("cuda", local_rank)
    if device_name in ("auto", "cpu"):
        return World(rank, local_rank, size, "gloo"), torch.device("cpu")
    pick_device(device_name)  # a name this machine lacks is reported as in a single process
    raise ValueError(f"device {device_name!r}: under torchrun each process picks its own device; use device=cuda "
                     "(each rank on cuda:LOCAL_RANK), cpu or auto")


@contextlib.contextmanager
def process_group(device_name: str = "auto"):
    """Yield (world, device). Under torchrun the process group is joined from its environment (MASTER_ADDR,
    RANK, ...) and left at the end; without torchrun it is a world of one on ``pick_device(device_name)``."""
    if not launched_by_torchrun():
        yield SINGLE, pick_device(device_name)
        return
    world, device = world_from_env(device_name)
    joined = not dist.is_initialized()
    if joined:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # nccl and the object collectives use the current device
        dist.init_process_group(world.backend, rank=world.rank, world_size=world.size)
    try:
        yield world, device
    finally:
        if joined:
            dist.destroy_process_group()


def broadcast_object(world: World, value):
    """Rank 0's ``value`` on every rank."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(world: World, value) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    values = [None] * world.size
    dist.all_gather_object(values, value)
    return values


SHARED_ERRORS = (ValueError, OSError, KeyboardInterrupt)


def on_main(world: World, action):
    """Run ``action()`` on rank 0 alone and give its result to every rank; an error there (a setting, a full
    disk, a run folder in use) is raised on every rank alike, so no process is left waiting for the others."""
    if not world.distributed:
        return action()
    outcome, error = None, None
    if world.is_main:
        try:
            outcome = ("done", action())
        except SHARED_ERRORS as caught:
            error = caught
            outcome = ("failed", type(caught), str(caught))
    outcome = broadcast_object(world, outcome)
    if error is not None:
        raise error
    if outcome[0] == "failed":
        kind, message = outcome[1], outcome[2]
        raise (kind() if issubclass(kind, KeyboardInterrupt) else kind(message))
    return outcome[1]


class WeightedShardSampler(Sampler[int]):
    """Oversampling for a data-parallel run: each epoch one weighted draw with replacement (the same on every rank,
    from ``seed`` and the epoch), split by rank, so that the processes together see what a single process's
    WeightedRandomSampler would draw and each sees different faces."""

    def __init__(self, weights: torch.Tensor, world: World, seed: int = 0):
        self.weights, self.world, self.seed, self.epoch = weights.double(), world, seed, 0
        self.num_samples = math.ceil(len(weights) / world.size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(self.weights, self.num_samples * self.world.size, replacement=True,
                                 generator=generator)
        return iter(draw[self.world.rank::self.world.size].tolist())

    def __len__(self) -> int:
        return self.num_samples
