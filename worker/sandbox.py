"""A model's constructor run where it cannot hold or crash the worker: a fresh Python process that counts the
architecture's parameters on the meta device within a time and memory budget, before the worker builds it.

A constructor is foreign code driven by user input: `{"depth": 20000}` keeps one busy for many minutes and
gigabytes even on the meta device, a zero divisor raises whatever it raises. The child gets a CPU-time limit
(so it ends even if its worker was killed), an address-space limit on top of the loaded libraries, an empty
working folder and no model caches; the worker waits at most the timeout and then kills it. A subprocess,
not multiprocessing: it works the same under every Celery pool (a prefork child is daemonic and may not
start multiprocessing children). Run as `python -m worker.sandbox` with a JSON request on stdin.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAX_DETAIL = 300
PATHS = re.compile(r"(?:[\w.~-]*/[\w.~-]+){2,}/?")  # a/b/c or /a/b: a file name is nobody's business here
# How native code reports a failed allocation: C++'s std::bad_alloc, torch's allocator, errno ENOMEM's text.
ALLOCATION_FAILED = re.compile(r"bad_alloc|can't allocate memory|cannot allocate memory|out of memory", re.I)
NEAR_THE_LIMIT = 0.9  # an address space this full when the constructor failed: the budget is what ended it


class ConstructorRefused(ValueError):
    """The constructor failed, ran past its budget or crashed; the message is safe to show the user."""


def public_text(text: str) -> str:
    """An error message without file paths, cut to a readable length."""
    text = PATHS.sub("<path>", " ".join(text.split()))
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + " ..."


def count_parameters(
    architecture: str,
    num_classes: int,
    input_shape: tuple[int, ...],
    kwargs: dict[str, Any],
    *,
    timeout_seconds: float,
    memory_bytes: int,
) -> int:
    """The parameter count, measured in a child process; ConstructorRefused when it cannot be had in budget."""
    request = json.dumps(
        {
            "architecture": architecture,
            "num_classes": num_classes,
            "input_shape": list(input_shape),
            "kwargs": kwargs,
            "cpu_seconds": math.ceil(timeout_seconds),
            "memory_bytes": memory_bytes,
        }
    )
    with tempfile.TemporaryDirectory(prefix="mcu-sandbox-") as empty:
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": empty,
            "TORCH_HOME": empty,
        }
        child = subprocess.Popen(
            [sys.executable, "-m", "worker.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=empty,
            env=env,
            start_new_session=True,
        )
        try:
            out, _ = child.communicate(request.encode(), timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise ConstructorRefused(
                f"building it took longer than {timeout_seconds:g} s (MCU_VALIDATION_TIMEOUT_SECONDS)"
            ) from None
    answer = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    if "parameters" in answer:
        return int(answer["parameters"])
    if "error" in answer:
        raise ConstructorRefused(f"its constructor failed: {public_text(answer['error'])}")
    if child.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ConstructorRefused(
            f"building it took longer than {timeout_seconds:g} s of CPU (MCU_VALIDATION_TIMEOUT_SECONDS)"
        )
    raise ConstructorRefused(
        f"building it needed more than {memory_bytes:,} bytes of memory (MCU_VALIDATION_MEMORY_BYTES), or crashed"
    )


def status_bytes(field: str) -> int:
    """A size from /proc/self/status (VmSize, VmPeak, ...) in bytes."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))


def ran_out_of_memory(error: BaseException, peak_before: int, start: int, limit: int) -> bool:
    """Whether the memory budget, not the constructor's own fault, ended it: a library may turn a failed
    allocation into MemoryError, a RuntimeError from C++ (std::bad_alloc) or anything else, so the chain's
    types and texts and how full the address space got all count. It first drops the failed frames, whose
    locals (the half-built model) still fill the address space: judging needs a little memory too."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    gc.collect()
    if any(isinstance(e, MemoryError) or ALLOCATION_FAILED.search(str(e)) for e in chain):
        return True
    peak = status_bytes("VmPeak")  # a new peak since the limit was set, near it
    return peak > peak_before and peak - start >= NEAR_THE_LIMIT * (limit - start)


def main() -> None:
    request = json.loads(sys.stdin.read())
    cpu = request["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # first: it holds even if the worker dies
    from unlearning.architectures import TIMM_PREFIX, count_parameters

    if request["architecture"].startswith(TIMM_PREFIX):
        import timm  # noqa: F401  (loaded before the memory limit: the limit is for the constructor)
    peak_before, start = status_bytes("VmPeak"), status_bytes("VmSize")
    limit = start + request["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        answer: dict[str, Any] = {
            "parameters": count_parameters(
                request["architecture"], request["num_classes"], tuple(request["input_shape"]), request["kwargs"]
            )
        }
    except Exception as error:  # noqa: BLE001  (whatever the constructor raises is the verdict)
        answer = (
            {"memory": True}
            if ran_out_of_memory(error, peak_before, start, limit)
            else {"error": f"{type(error).__name__}: {error}"}
        )
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
