"""Real torch.distributed ranks for tests: processes started by torch.multiprocessing spawn, a TCP rendezvous on a
loopback port, one torch thread each. A rank imports the module of the function it runs: keep that module light."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.support import free_port

RANKS = 2


def _rank(rank: int, port: int, world: int, backend: str, fn: Any, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def on_ranks(fn: Any, *args: Any, backend: str = "gloo", world: int = RANKS) -> None:
    mp.spawn(_rank, (free_port(), world, backend, fn, args), nprocs=world)
