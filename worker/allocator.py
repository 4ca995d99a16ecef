"""The worker's memory allocator: jemalloc, keeping freed pages through a task and handing them back after it.

glibc's malloc gives a fresh process's freed batches back to the kernel and faults them in again for the next
batch (126,000-292,000 page faults per grid point in a fresh grid helper: the "fresh helper is slow" finding of
docs/benchmarks.md); raising its thresholds fixed the speed but pinned up to 11 GiB in the heap. jemalloc with
`dirty_decay_ms:-1` keeps freed pages for reuse (0 faults a forward pass) without that fragmentation, and
`release_free_memory` gives them back when a task ends, so an idle worker holds only what is live.

`mcu worker` runs itself again with jemalloc preloaded (`exec_with_jemalloc`); its children (grid helpers,
torchrun ranks, the constructor sandbox) inherit it. MCU_WORKER_JEMALLOC=false keeps the system allocator,
and where no jemalloc is installed (Debian/Ubuntu: libjemalloc2) the worker says so and keeps it too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

JEMALLOC_CONF = "dirty_decay_ms:-1"  # freed pages stay for reuse until release_free_memory
ALL_ARENAS = 4096  # MALLCTL_ARENAS_ALL


def exec_with_jemalloc(argv: list[str]) -> None:
    """Replace this process by `argv` run with jemalloc preloaded, unless it already is or none is installed
    (then return). Call it first thing: nothing done before survives the exec."""
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    library = ctypes.util.find_library("jemalloc")  # a soname, which the loader finds as it finds any library
    if library is None:
        print("mcu worker: no jemalloc installed (libjemalloc2): the system allocator is slower", file=sys.stderr)
        return
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD", "")]))
    conf = os.environ.get("MALLOC_CONF") or JEMALLOC_CONF  # an operator's own tuning wins
    os.execve(argv[0], argv, os.environ | {"LD_PRELOAD": preload, "MALLOC_CONF": conf})


@functools.cache
def _mallctl() -> Any:
    """jemalloc's control function, looked up once per process; None where the process does not run on it."""
    mallctl = getattr(ctypes.CDLL(None), "mallctl", None)
    if mallctl is not None:
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return mallctl


def release_free_memory() -> bool:
    """Give jemalloc's freed pages back to the kernel (after every task); False where the process does not run
    on jemalloc."""
    mallctl = _mallctl()
    if mallctl is None:
        return False
    failed = mallctl(f"arena.{ALL_ARENAS}.purge".encode(), None, None, None, 0)
    if failed:
        log.warning("jemalloc's purge failed (error %d): freed pages stay with the worker", failed)
    return not failed
