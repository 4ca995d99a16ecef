"""One job's base method and curve on N data-parallel ranks against one rank (bench/gpu_check.sh runs it where 2 or
more GPUs are visible): the library's data-parallel path (unlearning/distributed.py), as the worker's torchrun
ranks run it (worker/data_parallel.py), without the service around it.

    python -m bench.gpu_scale                                          # every visible GPU against one, nccl
    python -m bench.gpu_scale --device cpu --ranks 2 --small           # anywhere: 2 gloo ranks on the CPU
    python -m bench.gpu_scale --json docs/results/gpu-scale.json

ResNet-18 on random CIFAR-shaped rows (bench.gpu_speed's data, forget 10%): it measures throughput, not
forgetting. Each world size trains the same seeded job (mask, `ft` base, curve) `--repeats` times, the two
sizes alternating; each rank is its own process (torch.multiprocessing spawn, a rendezvous file in a scratch
folder), one GPU each. Prints each run's phase seconds and, as its last line,
`gpu_scale: ranks=<N> base_Np_over_1p=<median ratio> curve_Np_over_1p=<median ratio>`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.common import write_json
from bench.gpu_speed import random_cifar
from unlearning import build_model, make_unlearning_data
from unlearning.pipeline import UnlearningJob


def _rank(rank: int, world: int, scratch: str, device_type: str, sizes: tuple[int, int], epochs: int) -> None:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    if world > 1:
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"file://{scratch}/rendezvous", rank=rank, world_size=world)
    try:
        dataset = random_cifar(*sizes, seed=0)
        n_train = sizes[0]
        forget = torch.randperm(n_train, generator=torch.Generator().manual_seed(1))[: n_train // 10]
        data = make_unlearning_data(dataset, channels=3, forget_indices=forget)
        torch.manual_seed(0)
        model = build_model("resnet18", 10, dataset.input_shape)
        config = {"epochs": epochs, "base": {"epochs": epochs}, "grid_points": 3}
        trained = UnlearningJob(model, data, "ft", config, device=device).train()
        if rank == 0:
            (Path(scratch) / "timings.json").write_text(json.dumps(trained.timings))
    finally:
        if world > 1:
            dist.destroy_process_group()


def run(world: int, device_type: str, sizes: tuple[int, int], epochs: int) -> dict[str, float]:
    """One job on `world` ranks: rank 0's phase seconds."""
    with tempfile.TemporaryDirectory() as scratch:
        mp.spawn(_rank, (world, scratch, device_type, sizes, epochs), nprocs=world)
        return json.loads((Path(scratch) / "timings.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--ranks", type=int, help="data-parallel ranks (default: every visible GPU)")
    parser.add_argument("--small", action="store_true", help="tiny sizes (a minute on a CPU)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the base method and of the curve")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ranks = args.ranks or torch.cuda.device_count()
    if ranks < 2:
        raise SystemExit(f"needs 2 or more ranks ({ranks} GPUs visible; --device cpu --ranks 2 runs on the CPU)")
    sizes = (512, 128) if args.small else (20_000, 2_000)
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        order = (1, ranks) if repeat % 2 == 0 else (ranks, 1)  # alternating: neither size always goes first
        for world in order:
            runs.append({"repeat": repeat, "ranks": world} | run(world, args.device, sizes, args.epochs))
            phases = ", ".join(f"{phase} {runs[-1][phase]:.1f} s" for phase in ("mask", "base", "curve"))
            print(f"repeat {repeat}, {world} rank(s): {phases}", flush=True)

    def ratio(phase: str) -> float:
        by = {(r["repeat"], r["ranks"]): r[phase] for r in runs}
        return float(np.median([by[(k, ranks)] / by[(k, 1)] for k in range(args.repeats)]))

    figures = {"base_Np_over_1p": ratio("base"), "curve_Np_over_1p": ratio("curve")}
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    write_json(args.json, {"device": device, "ranks": ranks, "rows": sizes[0], "epochs": args.epochs, "runs": runs}
               | figures)  # fmt: skip
    print(f"gpu_scale: ranks={ranks} " + " ".join(f"{k}={v:.3f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
