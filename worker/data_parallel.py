"""One job's training on several devices: torchrun ranks in processes of their own (docs/scaling.md).

    worker task ──Popen──▶ python -m worker.data_parallel launch ─▶ torchrun ─▶ N × python -m worker.data_parallel rank

Celery's prefork child cannot start ranks itself (a daemonic process may not have children, and DataLoader
processes fail there), so it starts torchrun in a subprocess and waits. Every rank loads the job's inputs,
its stored θ_p and checkpoint, and trains (`UnlearningJob.train`; data-parallel per unlearning/distributed.py);
rank 0 alone stores θ_p and the per-epoch checkpoints, prints progress lines and writes the summary. The task
keeps the heartbeat, relays progress, stops the ranks on a cancel, and then measures the curve itself.

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

import torch
import torch.distributed as dist
from safetensors.torch import load as load_tensors

from models import DeletionRequest
from unlearning.mcu import Checkpoint
from unlearning.pipeline import TrainedCurve, UnlearningJob
from unlearning.training import JobHooks, Progress, resolve_device
from worker import artifacts
from worker.control_process import exit_with_parent
from worker.services import Services

log = logging.getLogger(__name__)
RESTARTS = 2  # after a rank dies, every rank is started again from the last checkpoint, this many times
RESTART_ENV = "MCU_RANKS_RESTART"
PROGRESS_LINE = "mcu-progress "
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


def train_on_ranks(services: Services, request: DeletionRequest, job: UnlearningJob, devices: int) -> TrainedCurve:
    """Train the request's curve on `devices` ranks and rebuild it here (θ_p and the last checkpoint from the
    store, the summary rank 0 wrote); `job.hooks` gets the ranks' progress and is asked about cancelling. Ranks
    that fail are started again, from the last checkpoint, up to `RESTARTS` times."""
    with tempfile.TemporaryDirectory(prefix="mcu-ranks-") as tmp:
        summary_path = Path(tmp) / "summary.json"
        for attempt in range(RESTARTS + 1):
            returncode = _run_ranks(request.id, job.hooks, devices, summary_path, attempt)
            if returncode == 0:
                break
            failed = json.loads(summary_path.read_text()).get("problem") if summary_path.exists() else None
            if failed is not None:
                raise DataParallelError(failed["detail"], failed)
            log.warning("the ranks of %s failed (torchrun exited with %s); attempt %d of %d", request.id,
                        returncode, attempt + 1, RESTARTS + 1)  # fmt: skip
        else:
            raise DataParallelError(
                f"data-parallel training on {devices} devices failed {RESTARTS + 1} times, each resumed from the last "
                "checkpoint (the worker's log has each rank's error)"
            )
        summary = json.loads(summary_path.read_text())
    theta_p = load_tensors(services.store.get_bytes(artifacts.artifact_key(request.id, artifacts.THETA_P)))
    checkpoint = services.store.get_bytes(artifacts.artifact_key(request.id, artifacts.CHECKPOINT))
    return job.trained_from(theta_p, Checkpoint.from_bytes(checkpoint).control, summary)


def _run_ranks(request_id: str, hooks: JobHooks, devices: int, summary_path: Path, attempt: int) -> int:
    """One torchrun (a fresh rendezvous: its own restarts hung after a rank's death); its exit status."""
    launcher = [sys.executable, "-m", "worker.data_parallel", "launch", str(os.getpid()),
                "--standalone", f"--nproc-per-node={devices}", "--max-restarts=0",
                "-m", "worker.data_parallel", "rank", request_id, str(summary_path)]  # fmt: skip
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


def rank(request_id: str, summary_path: Path) -> None:
    """One rank: train the request's curve with the others; rank 0 stores, reports and summarises."""
    import telemetry
    from settings import get_settings
    from worker.inputs import load_inputs
    from worker.services import connect

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
        theta_p = artifacts.load_optional(services, request_id, artifacts.THETA_P)
        checkpoint = artifacts.load_optional(services, request_id, artifacts.CHECKPOINT)
        writer = dist.get_rank() == 0
        job = UnlearningJob(inputs.model, inputs.data, request.base_method, request.config, device=device,
                            hooks=JobHooks(on_progress=_ProgressLines() if writer else None),
                            base_done=theta_p is not None)  # fmt: skip
        resume = Checkpoint.from_bytes(checkpoint) if checkpoint else None
        trained = job.train(
            load_tensors(theta_p) if theta_p else None,
            resume,
            artifacts.theta_p_saver(services, request_id) if writer else None,
            artifacts.checkpoint_saver(services, request_id) if writer else None,
        )
        if writer:
            training = trained.training | {
                "device": f"{device.type} × {dist.get_world_size()}",
                "rank_restarts": int(os.environ.get(RESTART_ENV, "0")),
            }
            summary_path.write_text(json.dumps({"targets": asdict(trained.targets), "mask": trained.mask,
                                                "training": training, "timings": trained.timings}))  # fmt: skip
    except Exception as error:
        from worker.errors import known_problem

        problem = known_problem(error)
        if problem is not None and dist.get_rank() == 0:  # not retried: the task fails the request with it
            summary_path.write_text(json.dumps({"problem": problem}))
        raise
    finally:
        dist.destroy_process_group()


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
