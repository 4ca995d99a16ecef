"""The curve training's mean loss per epoch (`training["epoch_losses"]`, shown by GET of a request): one value
per epoch, carried through a checkpoint so a resumed job reports every epoch, not only those after the resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from unlearning import Checkpoint, run_unlearning
from unlearning.data import UnlearningData
from unlearning.training import Cancelled, JobHooks

from .conftest import FAST


def test_one_loss_per_epoch_and_a_resume_keeps_the_earlier_ones(original, classwise: UnlearningData) -> None:
    config = FAST | {"epochs": 3, "grid_points": 3, "base": {"epochs": 1}}
    full = run_unlearning(copy.deepcopy(original), classwise, "rl", config, device="cpu")
    losses = full.training["epoch_losses"]
    assert len(losses) == 3 and all(isinstance(x, float) and math.isfinite(x) for x in losses)
    assert len(set(losses)) == 3  # each epoch's own mean, not one value repeated

    saved: list[bytes] = []
    stored_theta_p: list[dict] = []
    with pytest.raises(Cancelled):
        run_unlearning(
            copy.deepcopy(original),
            classwise,
            "rl",
            config,
            device="cpu",
            hooks=JobHooks(should_cancel=lambda: len(saved) >= 2),
            on_checkpoint=lambda c: saved.append(c.to_bytes()),
            on_theta_p=stored_theta_p.append,
        )
    checkpoint = Checkpoint.from_bytes(saved[-1])
    assert checkpoint.epoch == 2 and checkpoint.epoch_losses == pytest.approx(losses[:2])
    resumed = run_unlearning(
        copy.deepcopy(original), classwise, "rl", config, device="cpu", theta_p=stored_theta_p[0], resume=checkpoint
    )
    assert resumed.training["epoch_losses"] == pytest.approx(losses, rel=1e-4)


def test_checkpoint_round_trips_epoch_losses() -> None:
    checkpoint = Checkpoint(2, {"w": torch.zeros(2)}, epoch_losses=[0.75, None])
    assert Checkpoint.from_bytes(checkpoint.to_bytes()).epoch_losses == [0.75, None]
