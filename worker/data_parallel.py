"""One job's training on several devices: torchrun ranks in processes of their own (docs/scaling.md).

    worker task ──Popen──▶ python -m worker.data_parallel launch ─▶ torchrun ─▶ N × python -m worker.data_parallel rank

Celery's prefork child cannot start ranks itself (a daemonic process may not have children, and DataLoader
processes fail there), so it starts torchrun in a subprocess and waits. Every rank loads the job's inputs,
its stored θ_p and checkpoint, and trains (`UnlearningJob.train`; data-parallel per unlearning/distributed.py);
rank 0 alone stores θ_p and the per-epoch checkpoints, prints progress lines, and leaves the trained θ_p, θ_c and
a summary in a folder of the task's. The task keeps the heartbeat, relays progress, stops the ranks on a cancel,
and then measures the curve itself.

A rank that dies ends the torchrun; the task starts the ranks again (`RESTARTS` times), resuming from the last
checkpoint; after that the attempt fails with `DataParallelError` (a `failed` request). Each process exits when
the one that started it is gone (worker/control_process.py `exit_with_parent`), so no rank outlives its worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

import telemetry
from models import DeletionRequest
from settings import get_settings
from unlearning.pipeline import TrainedCurve, UnlearningJob
from unlearning.training import JobHooks, Progress, resolve_device
from worker import artifacts
from worker.control_process import exit_with_parent
from worker.inputs import load_inputs
from worker.services import connect

log = logging.getLogger(__name__)
RESTARTS = 2  # after a rank dies, every rank is started again from the last checkpoint, this many times
RESTART_ENV = "MCU_RANKS_RESTART"
PROGRESS_LINE = "mcu-progress "
SUMMARY, THETA_P_FILE, THETA_C_FILE = "summary.json", "theta_p.safetensors", "theta_c.safetensors"
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 30


class DataParallelError(RuntimeError):
    """The ranks failed. With `problem`: rank 0's own error, one a retry would not change (a diverged curve, an
    invalid config: worker/errors.py), stored as it is; without: they died more often than they are restarted."""

    def __init__(self, message: str, problem: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problem = problem


def devices_per_job(setting: int | str, device: str) -> int:
    """`MCU_DEVICES_PER_JOB` as a number of ranks: `all` is every visible GPU (1 without any); on CUDA at most the
    visible GPUs (a worker given fewer, e.g. a host's last group, trains on those). CPU ranks: as many as set."""
    gpus = torch.cuda.device_count() if resolve_device(device).type == "cuda" else 0
    if setting == "all":
        return max(1, gpus)
    return min(int(setting), gpus) if gpus else int(setting)


def train_on_ranks(request_id: str, job: UnlearningJob, devices: int) -> TrainedCurve:
    """Train the request's curve on `devices` ranks and rebuild it here from what rank 0 leaves in a folder of this
    host (`_hand_over`); `job.hooks` gets the ranks' progress and is asked about cancelling. Ranks that fail are
    started again, from the last checkpoint, up to `RESTARTS` times."""
    with tempfile.TemporaryDirectory(prefix="mcu-ranks-") as tmp:
        out = Path(tmp)
        for attempt in range(RESTARTS + 1):
            returncode = _run_ranks(request_id, job.hooks, devices, out, attempt)
            if returncode == 0:
                break
            failed = json.loads((out / SUMMARY).read_text()).get("problem") if (out / SUMMARY).exists() else None
            if failed is not None:
                raise DataParallelError(failed["detail"], failed)
            log.warning("the ranks of %s failed (torchrun exited with %s); attempt %d of %d", request_id,
                        returncode, attempt + 1, RESTARTS + 1)  # fmt: skip
        else:
            raise DataParallelError(
                f"data-parallel training on {devices} devices failed {RESTARTS + 1} times, each resumed from the last "
                "checkpoint (the worker's log has each rank's error)"
            )
        summary = json.loads((out / SUMMARY).read_text())
        return job.trained_from(load_file(out / THETA_P_FILE), load_file(out / THETA_C_FILE), summary)


def _run_ranks(request_id: str, hooks: JobHooks, devices: int, out: Path, attempt: int) -> int:
    """One torchrun (a fresh rendezvous: its own restarts hung after a rank's death); its exit status."""
    launcher = [sys.executable, "-m", "worker.data_parallel", "launch", str(os.getpid()),
                "--standalone", f"--nproc-per-node={devices}", "--max-restarts=0",
                "-m", "worker.data_parallel", "rank", request_id, str(out)]  # fmt: skip
    env = os.environ | {RESTART_ENV: str(attempt)}
    process = subprocess.Popen(launcher, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env)
    progress: queue.Queue[Progress] = queue.Queue()
    threading.Thread(target=_read_progress, args=(process, progress), daemon=True).start()
    try:
        while process.poll() is None:
            with contextlib.suppress(queue.Empty):
                hooks.report(progress.get(timeout=POLL_SECONDS))
            hooks.check_cancel()
    except BaseException:
        _stop(process)
        raise
    return process.returncode


def _read_progress(process: subprocess.Popen[str], into: queue.Queue[Progress]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(PROGRESS_LINE):
            into.put(Progress(**json.loads(line.removeprefix(PROGRESS_LINE))))


def _stop(process: subprocess.Popen[str]) -> None:
    """torchrun stops its ranks on SIGTERM; whatever is left after the grace period is killed."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def launch(parent_pid: int, torchrun_args: list[str]) -> None:
    """torchrun, exiting with the worker task that started it."""
    from torch.distributed.run import main as torchrun

    exit_with_parent(parent_pid)
    torchrun(torchrun_args)


def rank(request_id: str, out: Path) -> None:
    """One rank: train the request's curve with the others; rank 0 stores, reports and hands the result over."""
    exit_with_parent(os.getppid())  # torchrun
    settings = get_settings()
    telemetry.configure("mcu-worker", settings)
    torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        services = connect(settings)
        with services.factory() as session:
            request = session.get(DeletionRequest, request_id)
        assert request is not None
        inputs = load_inputs(services, request)
        writer = dist.get_rank() == 0
        theta_p, resume = artifacts.stored_training(services, request_id, record=writer)
        job = UnlearningJob(inputs.model, inputs.data, request.base_method, request.config, device=device,
                            hooks=JobHooks(on_progress=_ProgressLines() if writer else None),
                            base_done=theta_p is not None)  # fmt: skip
        trained = job.train(
            theta_p,
            resume,
            artifacts.theta_p_saver(services, request_id) if writer else None,
            artifacts.checkpoint_saver(services, request_id) if writer else None,
        )
        if writer:
            _hand_over(trained, out, {"device": f"{device.type} × {dist.get_world_size()}",
                                      "rank_restarts": int(os.environ.get(RESTART_ENV, "0"))})  # fmt: skip
    except Exception as error:
        from worker.errors import known_problem  # worker.errors imports this module

        problem = known_problem(error)
        if problem is not None and dist.get_rank() == 0:  # not retried: the task fails the request with it
            (out / SUMMARY).write_text(json.dumps({"problem": problem}))
        raise
    finally:
        dist.destroy_process_group()


def _hand_over(trained: TrainedCurve, out: Path, training: dict[str, Any]) -> None:
    """The trained curve's θ_p and θ_c (the parameters a curve is made of) and its summary, for the task on this
    host: no second download of what rank 0 holds."""
    save_file({n: v.detach().cpu().contiguous() for n, v in trained.curve.end.items()}, out / THETA_P_FILE)
    save_file({n: v.detach().cpu().contiguous() for n, v in trained.curve.control.items()}, out / THETA_C_FILE)
    summary = {"targets": asdict(trained.targets), "mask": trained.mask, "timings": trained.timings,
               "training": trained.training | training}  # fmt: skip
    (out / SUMMARY).write_text(json.dumps(summary))


class _ProgressLines:
    """Rank 0's progress as lines for the worker task, at most one a poll interval inside a phase."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self.last < POLL_SECONDS and 0.0 < progress.fraction < 1.0:
            return
        self.last = now
        print(PROGRESS_LINE + json.dumps(asdict(progress)), flush=True)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "launch":
        launch(int(rest[0]), rest[1:])
    else:
        rank(rest[0], Path(rest[1]))
