"""A job's grid fanned out over two real worker processes (MCU_GRID_FANOUT; worker/grid.py): both measure
points, the recommended point is measured in two parts, and the merged curve equals every point measured again
in one process from the stored curve, at its own t, the recommended point on every row included. A stack of its
own: Postgres, Redis, S3, two workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from safetensors.torch import load as load_tensors

from cli.digits import DigitsUpload
from models import DeletionRequest
from settings import Settings
from tests.support import QUICK_EVIDENCE, redis_url, wait_for_state
from unlearning.pipeline import PointMeter, measure_point
from unlearning.spectrum import grid
from worker import artifacts
from worker.inputs import load_inputs
from worker.services import connect

from .conftest import Stack, own_stack, register, submit

BROKER_URL = redis_url("own-stack")
# One pass of 41 points: long enough on digits for the second worker to load the job's inputs and join.
WIDE_GRID = {"epochs": 2, "grid_points": 41, "grid_refine": False, "base": {"epochs": 2}, "evidence": QUICK_EVIDENCE}


@pytest.fixture(scope="module")
def fanned_out(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("fanout")
    for stack in own_stack(data_dir, s3_endpoint, "fanout", BROKER_URL, {"MCU_GRID_FANOUT": "true"}):
        stack.start_worker()
        yield stack


def test_two_workers_measure_one_grid_and_it_equals_the_grid_measured_in_one_process(
    fanned_out: Stack, digits_upload: DigitsUpload
) -> None:
    with fanned_out.client() as client:
        _, model_id = register(client, digits_upload)
        request_id = submit(client, model_id, forget={"classes": [3]}, config=WIDE_GRID)["id"]
        request = wait_for_state(client, request_id, ("awaiting_selection",), timeout=600)
        curve = client.get(f"/v1/deletion-requests/{request_id}/curve").json()

    by_worker = request["training"]["grid_points_by_worker"]
    assert len(by_worker) == 2 and all(count >= 1 for count in by_worker.values()), by_worker
    assert sum(by_worker.values()) == len(curve["points"]) == 41
    assert [p["t"] for p in curve["points"]] == grid(41)  # every point once, merged in t order

    # The same points measured here, in one process, from what the job stored.
    services = connect(Settings(**_settings_of(fanned_out)))
    with services.factory() as session:
        row = session.get(DeletionRequest, request_id)
        assert row is not None
        session.expunge(row)
    inputs = load_inputs(services, row)
    tensors = {"theta_o": inputs.model.state_dict()} | {
        name: load_tensors(services.store.get_bytes(artifacts.artifact_key(request_id, name)))
        for name in ("theta_p", "theta_c")
    }
    meter = PointMeter(inputs.model, inputs.data, tensors, row.config, row.base_method, device="cpu")
    for point in curve["points"]:
        again = meter.point(point["t"]).to_dict()
        assert {k: point[k] for k in again} == again, point["t"]

    # The recommended point, measured on every row in one part per worker that measured the grid (either worker
    # may take either part: on digits a part takes 0.1 s), equals the whole measured here in one piece.
    parts_by_worker = request["training"]["recommended_point_parts_by_worker"]
    assert sum(parts_by_worker.values()) == len(by_worker) == 2 and set(parts_by_worker) <= set(by_worker)
    recommended = curve["recommended_point"]
    whole = measure_point(meter.curve, recommended["t"], meter.data, meter.full_sets, meter.cfg).to_dict()
    assert {k: recommended[k] for k in whole} == whole


def _settings_of(stack: Stack) -> dict[str, str]:
    env = stack.env
    return {
        "data_dir": env["MCU_DATA_DIR"],
        "database_url": env["MCU_DATABASE_URL"],
        "broker_url": env["MCU_BROKER_URL"],
        "storage_url": env["MCU_STORAGE_URL"],
        "s3_endpoint_url": env["MCU_S3_ENDPOINT_URL"],
    }
