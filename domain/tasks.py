"""The broker's vocabulary: task names, the queue each goes to, and what its first argument names.

Here, not in worker/, so that domain/ (which sends follow-up tasks after a commit) imports nothing from the
worker; worker/dispatch.py sends them and worker/celery_app.py registers them under these names.
"""

from __future__ import annotations

from typing import Protocol

GPU_QUEUE = "gpu"  # training, materialisation, attacks on a point and a model's accuracy measurement
# A model's check, clean-up and callback retries: short, CPU-only tasks that `mcu worker` consumes in a process
# of its own (worker/control_process.py), never behind a job.
CONTROL_QUEUE = "control"
ALL_QUEUES = (GPU_QUEUE, CONTROL_QUEUE)
RUN_REQUEST = "mcu.run_request"
MATERIALIZE_SELECTION = "mcu.materialize_selection"
MEASURE_GRID = "mcu.measure_grid"  # a share of a running job's grid pass (worker/grid.py)
ATTACK_POINT = "mcu.attack_point"  # the auditor's attacks on a curve point (request id, t)
CLEANUP_REQUEST = "mcu.cleanup_request"
DELIVER_CALLBACK = "mcu.deliver_callback"
VALIDATE_MODEL = "mcu.validate_model"  # a model's check, the first stage of its validation (worker/validation.py)
MEASURE_MODEL = "mcu.measure_model"  # its accuracy measurement, sent by a check that passed
QUEUE_OF = {
    RUN_REQUEST: GPU_QUEUE,
    MATERIALIZE_SELECTION: GPU_QUEUE,
    ATTACK_POINT: GPU_QUEUE,
    MEASURE_GRID: GPU_QUEUE,
    MEASURE_MODEL: GPU_QUEUE,
    VALIDATE_MODEL: CONTROL_QUEUE,
    CLEANUP_REQUEST: CONTROL_QUEUE,
    DELIVER_CALLBACK: CONTROL_QUEUE,
}


def subject_of(task_name: str) -> str:
    """The log field a task's first argument fills: a model's id for its validation, else a request's id."""
    return "model_id" if task_name in (VALIDATE_MODEL, MEASURE_MODEL) else "request_id"


class Sender(Protocol):
    """What sends a task by name (worker/dispatch.py's Dispatcher): True when the broker took it."""

    def send(self, task_name: str, *args: object, countdown: float | None = None) -> bool: ...
