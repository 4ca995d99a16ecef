"""Gradients summed over ranks (unlearning/distributed.py `sum_gradients`, `SharedSum`) by three real gloo ranks
out of step. This module stays light: every rank imports it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from tests.support.ranks import on_ranks
from unlearning.distributed import SharedSum, sum_gradients

SUM_ROUNDS = 40


def sum_rounds(out: Path, elsewhere: Path | None) -> None:
    """`SUM_ROUNDS` gradient sums of this rank's seeded values, the ranks out of step (each sleeps a rank- and
    round-dependent while before its turn); rank r saves what it got and whether memory was shared. With `elsewhere`,
    rank 1 looks for the shared file there, as a rank on another host would not find it. Sharing memory, the last
    rank then stops while the others sum once more: they time out."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if elsewhere is not None and rank == 1:
        SharedSum.DIRECTORY = elsewhere
    SharedSum.TIMEOUT_SECONDS = 2.0
    param = torch.zeros(1000, requires_grad=True)
    sums = []
    for k in range(SUM_ROUNDS):
        time.sleep(0.002 * ((k + rank) % 3))
        param.grad = torch.randn(1000, generator=torch.Generator().manual_seed(100 * k + rank))
        sum_gradients([param], skip=False)
        sums.append(param.grad.clone())
    shared = SharedSum.of(torch.zeros(1001)) is not None  # the exchange sum_gradients used (the gradients and a flag)
    save_file({"sums": torch.stack(sums), "shared": torch.tensor(shared)}, out / f"rank{rank}.safetensors")
    if shared and rank < world - 1:
        with pytest.raises(TimeoutError, match=f"rank {world - 1} did not add its part of the sum in 2 s"):
            sum_gradients([param], skip=False)
        (out / f"rank{rank}.timed-out").touch()


def _expected_sums(world: int) -> torch.Tensor:
    return torch.stack(
        [
            torch.stack(
                [torch.randn(1000, generator=torch.Generator().manual_seed(100 * k + r)) for r in range(world)]
            ).sum(0)
            for k in range(SUM_ROUNDS)
        ]
    )


@pytest.mark.parametrize("host", ["one host", "rank 1 elsewhere"])
def test_ranks_sum_gradients_exactly_alike_through_shared_memory_or_else_the_all_reduce(
    tmp_path: Path, host: str
) -> None:
    """Three ranks out of step: every round's sum is the same on every rank, bit for bit, and the sum of what they
    gave; through shared memory when every rank maps the file (its name gone from the directory afterwards; a rank
    that stops summing times the others out), through gloo's all-reduce on every rank when one cannot."""
    elsewhere = tmp_path / "elsewhere" if host != "one host" else None
    if elsewhere is not None:
        elsewhere.mkdir()
    before = set(SharedSum.DIRECTORY.glob("mcu-sum-*"))
    on_ranks(sum_rounds, tmp_path, elsewhere, world=3)
    got = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(3)]
    for other in got[1:]:
        assert torch.equal(other["sums"], got[0]["sums"])
    torch.testing.assert_close(got[0]["sums"], _expected_sums(3), rtol=1e-6, atol=1e-6)
    assert [bool(g["shared"]) for g in got] == [elsewhere is None] * 3
    assert sorted(p.name for p in tmp_path.glob("*.timed-out")) == (
        ["rank0.timed-out", "rank1.timed-out"] if elsewhere is None else []
    )
    assert set(SharedSum.DIRECTORY.glob("mcu-sum-*")) == before
