"""The control queue's own consumer beside a worker's jobs.

Celery's solo pool runs one task at a time, so a worker that consumed both queues in one process kept model
checks, clean-ups and callback retries waiting behind a job that trains for hours. `mcu worker`, asked for
both queues, consumes the gpu queue itself and starts `mcu worker --queues control` as a child process:
lightweight (CPU only: no CUDA device is visible to it; no reconciler; no metrics endpoint, the port is the
parent's), restarted when it dies, stopped when the parent stops. A child whose parent is gone (killed with
SIGKILL, which nothing can pass on) stops itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from celery import signals

from domain.tasks import CONTROL_QUEUE

log = logging.getLogger(__name__)
RESTART_DELAY_SECONDS = 5.0
STOP_SECONDS = 30.0  # a task in hand (a check within its budget, a callback) finishes; then it is killed
PARENT_POLL_SECONDS = 1.0


class ControlProcess:
    """`mcu worker --queues control` as a child of this worker, kept running until `stop`."""

    def __init__(self, hostname: str) -> None:
        self.argv = [sys.executable, "-m", "cli", "worker", f"--queues={CONTROL_QUEUE}", "--no-reconcile"]
        self.argv += [f"--name={hostname}-control", f"--parent-pid={os.getpid()}"]
        self.env = {k: v for k, v in os.environ.items() if k != "MCU_WORKER_METRICS_PORT"}
        self.env["CUDA_VISIBLE_DEVICES"] = ""  # its tasks run on the CPU: it holds no GPU memory
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)  # its lines go where this worker's go
        threading.Thread(target=self._keep, name="mcu-control-process", daemon=True).start()
        # Celery's warm shutdown (SIGTERM, Ctrl-C) of this worker stops the child at once, not after the job.
        signals.worker_shutting_down.connect(self._on_shutdown, weak=False)

    def _keep(self) -> None:
        while True:
            assert self.process is not None
            code = self.process.wait()
            if self.stopping.wait(RESTART_DELAY_SECONDS):
                return
            with self.lock:
                if self.stopping.is_set():
                    return
                log.warning("the control-queue process exited (status %s); starting it again", code)
                self.process = subprocess.Popen(self.argv, env=self.env)

    def _on_shutdown(self, **_: object) -> None:
        with self.lock:
            self.stopping.set()
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()  # Celery's warm shutdown: it finishes the task in hand

    def stop(self) -> None:
        self._on_shutdown()
        if self.process is None:
            return
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()  # its task's message was not acknowledged: it is delivered again
            self.process.wait()


def exit_with_parent(parent_pid: int) -> None:
    """In the child: a warm shutdown once the parent is gone (the child is then adopted: its parent id changes)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(PARENT_POLL_SECONDS)
        log.warning("the worker that started this control-queue process (pid %s) is gone; stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="mcu-parent-watch", daemon=True).start()
