"""Data-parallel training (unlearning/distributed.py) on 2 gloo ranks against the same seeded job in one process.

The ranks are real processes (torch.multiprocessing spawn, a TCP rendezvous on a loopback port). A base method
whose loss is one mean over the batch gives the same weights to float rounding; the curve, where each rank
trains at its own t, gives metrics within 2 binomial standard errors at every point; and a checkpoint taken on
one layout resumes on the other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from tests.support.ranks import RANKS, on_ranks
from unlearning import load_digits_dataset, make_unlearning_data
from unlearning.architectures import seeded_init
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import resolve_config
from unlearning.data import UnlearningData
from unlearning.mcu import Checkpoint
from unlearning.pipeline import UnlearningJob
from unlearning.training import JobHooks

FT_BATCH = 64  # the retain split's last batch has ≥ 2 rows: a batch of fewer rows than ranks is left out
CURVE = {"seed": 3, "epochs": 2, "grid_points": 6, "lr": 0.02, "base": {"epochs": 1}}


def _data() -> UnlearningData:
    digits = load_digits_dataset()
    n = len(digits.train_labels)
    forget = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 10]
    return make_unlearning_data(digits, channels=1, forget_indices=forget)


def _model(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = seeded_init("cnn-small", 10, load_digits_dataset().input_shape, seed=0)
    model.load_state_dict(state)
    return model


def is_writer() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def fine_tune(original: Path, out: Path, device: str = "cpu") -> None:
    """θ_p of `ft` (one mean of CE over retain batches) from θ_o, BatchNorm in train mode; on CUDA each rank
    on its own GPU."""
    if device == "cuda":
        device = f"cuda:{dist.get_rank() if dist.is_initialized() else 0}"
    config = resolve_config({"base": {"epochs": 2, "batch_size": FT_BATCH}}, "ft").base
    model, data = _model(load_file(original)).to(device), _data().batches_on(torch.device(device))
    model = run_base_method("ft", model, data, config, MethodContext(0, JobHooks()))
    if is_writer():
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, out)


def train_and_measure(original: Path, theta_p: Path, out: Path, resume: Path | None, keep_at: Path | None) -> None:
    """The curve from a stored θ_p (resumed from `resume`); rank 0 keeps the epoch-1 checkpoint (`keep_at`) and
    writes the measured grid and training summary to `out`."""
    job = UnlearningJob(_model(load_file(original)), _data(), "ft", CURVE, device="cpu", base_done=True)

    def keep(checkpoint: Checkpoint) -> None:
        if keep_at is not None and checkpoint.epoch == 1 and is_writer():
            keep_at.write_bytes(checkpoint.to_bytes())

    start = Checkpoint.from_bytes(resume.read_bytes()) if resume else None
    trained = job.train(load_file(theta_p), start, on_checkpoint=keep)
    if is_writer():
        result = job.measure(trained)
        points = [p.to_dict() | {"forget_rows": len(result.sets.forget)} for p in result.points]
        out.write_text(json.dumps({"points": points, "training": result.training}))


@pytest.fixture(scope="module")
def theta_o(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.unlearning.conftest import _train_on_digits

    path = tmp_path_factory.mktemp("ddp") / "theta_o.safetensors"
    save_file({k: v.contiguous() for k, v in _train_on_digits(load_digits_dataset()).state_dict().items()}, path)
    return path


def test_base_method_on_two_ranks_equals_one_process(theta_o: Path, tmp_path: Path) -> None:
    """Gradients summed by rows and BatchNorm statistics over both ranks: the one-process weights, running
    statistics included (without the synced statistics each rank normalises by its half batch's)."""
    assert len(_data().retain) % FT_BATCH >= RANKS
    fine_tune(theta_o, tmp_path / "one.safetensors")
    on_ranks(fine_tune, theta_o, tmp_path / "two.safetensors")
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    start = load_file(theta_o)
    moved = max(float((one[k].float() - start[k].float()).abs().max()) for k in one)
    assert moved > 0.05  # training moved the weights: the comparison below means something
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=2e-4, rtol=1e-3, msg=name)


@pytest.mark.skipif(torch.cuda.device_count() < RANKS, reason="needs 2 CUDA devices (bench/gpu_check.sh runs it)")
def test_base_method_on_two_cuda_ranks_equals_one_cuda_process(theta_o: Path, tmp_path: Path) -> None:
    """The same on nccl, a GPU per rank (bf16 autocast: a looser tolerance)."""
    fine_tune(theta_o, tmp_path / "one.safetensors", "cuda")
    on_ranks(fine_tune, theta_o, tmp_path / "two.safetensors", "cuda", backend="nccl")
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=2e-2, rtol=2e-2, msg=name)


def _within_two_standard_errors(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The metrics of two grids that differ by more than 2 standard errors of a difference of two binomial
    estimates (a proportion of 0 or 1 counts as one row's worth of uncertainty)."""
    far = []
    for p, q in zip(a["points"], b["points"], strict=True):
        assert p["t"] == q["t"]
        sizes = {"forget_accuracy": p["forget_rows"], **{k: p["eval_sizes"][k] for k in ("retain", "test")}}
        for metric, n in (
            ("forget_accuracy", sizes["forget_accuracy"]),
            ("retain_accuracy", sizes["retain"]),
            ("test_accuracy", sizes["test"]),
        ):
            variance = sum(max(x * (1 - x), 1 / n) / n for x in (p[metric], q[metric]))
            if abs(p[metric] - q[metric]) > 2 * math.sqrt(variance):
                far.append(f"t={p['t']} {metric}: {p[metric]:.4f} vs {q[metric]:.4f}")
    return far


def test_curve_on_two_ranks_matches_one_process_and_resumes_across_layouts(theta_o: Path, tmp_path: Path) -> None:
    fine_tune(theta_o, theta_p := tmp_path / "theta_p.safetensors")
    train_and_measure(theta_o, theta_p, tmp_path / "one.json", None, tmp_path / "one-epoch1.ckpt")
    on_ranks(train_and_measure, theta_o, theta_p, tmp_path / "two.json", None, tmp_path / "two-epoch1.ckpt")
    # Each layout resumes from the other's epoch-1 checkpoint.
    on_ranks(train_and_measure, theta_o, theta_p, tmp_path / "two-from-one.json", tmp_path / "one-epoch1.ckpt", None)
    train_and_measure(theta_o, theta_p, tmp_path / "one-from-two.json", tmp_path / "two-epoch1.ckpt", None)

    runs = {
        name: json.loads((tmp_path / f"{name}.json").read_text())
        for name in ("one", "two", "two-from-one", "one-from-two")
    }
    for run in runs.values():
        for point in run["points"]:
            point["eval_sizes"] = run["training"]["eval_sizes"]
    one_epoch = runs["one"]["training"]["batches"] // 2
    assert runs["one-from-two"]["training"]["batches"] == one_epoch  # resumed at epoch 1: one epoch trained
    assert 0 < runs["two-from-one"]["training"]["batches"] <= one_epoch
    assert runs["two"]["points"] != runs["one"]["points"]  # the ranks trained at other t values
    for name in ("two", "two-from-one", "one-from-two"):
        assert _within_two_standard_errors(runs["one"], runs[name]) == [], name
