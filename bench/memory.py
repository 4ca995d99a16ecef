"""Worker memory against dataset size: the same job through the embedded service at 60,000 and 600,000 rows.

    python -m bench.memory --json docs/results/memory.json

Data: Fashion-MNIST's 60,000 train and 10,000 test images (Debian package `dataset-fashion-mnist`, gzipped IDX
under /usr/share/datasets/fashion-mnist/) when installed, else 28×28 synthetic grey images (the output says
which). The 600,000-row set is the 60,000 replicated 10 times, each copy with its own seeded noise (±8 grey
levels) and new sample ids; one shard of 60,000 rows per copy. A cnn-small trained for one epoch on 6,000 rows.

Per size, a fresh `python -m cli serve` + `python -m cli worker` on the embedded default (SQLite, local folder
store) with default data-path settings: the model is registered with the "dataset" preprocessing preset (the
worker fits mean/std over the whole train split), then one request forgets 1,000 random rows with identical
cheap settings (base `ga` 1 epoch, curve 1 epoch, 3 grid points, no refinement) and the recommended point is
selected and published. The worker's RSS (the process and its children, from /proc) is sampled every 0.1 s from
its start to the end; its peak is the headline. Last line: `memory: rss_60k=<MB> rss_600k=<MB> ratio=<r>`.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    FASHION,
    embedded_env,
    fashion_mnist_arrays,
    machine_info,
    markdown_table,
    spawn,
    stop,
    wait_http_ok,
    write_json,
)
from mcu_client import Client
from tests.support import free_port

SIZES = (60_000, 600_000)
FORGET_ROWS = 1000
JOB = {"epochs": 1, "base": {"epochs": 1}, "grid_points": 3, "grid_refine": False}
BASE_METHOD = "ga"
ACK = "erasure criterion not met: a memory benchmark"


def base_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(train images [60000, 28, 28] uint8, labels, test images [10000, ...], labels, source)."""
    if (FASHION / "train-images-idx3-ubyte.gz").is_file():
        return (*fashion_mnist_arrays(), "fashion-mnist")
    rng = np.random.default_rng(0)  # class k: a bright square at a class-dependent place, plus noise
    labels = rng.integers(0, 10, 70_000)
    images = rng.integers(0, 64, (70_000, 28, 28), dtype=np.uint8)
    for k in range(10):
        images[labels == k, 2 * k : 2 * k + 9, 2 * k : 2 * k + 9] = 255
    return images[:60_000], labels[:60_000], images[60_000:], labels[60_000:], "synthetic"


def write_upload(directory: Path, rows: int, data: tuple) -> tuple[Path, list[Path]]:
    """Shards of 60,000 train rows (copy k: noisy with seed k, ids c<k>-<i>), a test shard, the manifest."""
    from safetensors.numpy import save_file

    train_x, train_y, test_x, test_y, _ = data
    lines, shards = ["sample_id,split,shard,row,subject_id"], []
    for copy in range(rows // len(train_x)):
        images = train_x
        if copy:
            noise = np.random.default_rng(copy).integers(-8, 9, train_x.shape)
            images = np.clip(train_x.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        shards.append(directory / f"train-{copy}.safetensors")
        save_file({"inputs": np.ascontiguousarray(images[:, None]), "labels": train_y.astype(np.int64)}, shards[-1])
        lines += [f"c{copy}-{i},train,{shards[-1].name},{i},s{copy}-{i}" for i in range(len(images))]
    shards.append(directory / "test.safetensors")
    save_file({"inputs": np.ascontiguousarray(test_x[:, None]), "labels": test_y.astype(np.int64)}, shards[-1])
    lines += [f"t{i},test,test.safetensors,{i}," for i in range(len(test_x))]
    manifest = directory / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, shards


def trained_weights(path: Path, data: tuple) -> None:
    """cnn-small after one epoch on 6,000 rows, with the statistics the "dataset" preset will fit."""
    import torch
    from safetensors.torch import save_file

    from unlearning import ImageDataset, build_model, make_unlearning_data, train_classifier
    from unlearning.data import Subset

    x, y = torch.from_numpy(data[0][:6000, None].copy()), torch.from_numpy(data[1][:6000].astype(np.int64))
    dataset = ImageDataset(x, y, x[:10], y[:10], 10)
    model = build_model("cnn-small", 10, (1, 28, 28))
    train_classifier(
        model,
        Subset(x, y, torch.arange(len(y))),
        make_unlearning_data(dataset, channels=1, forget_classes=[0]).adapter,
        epochs=1,
        lr=0.05,
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (Linux /proc; psutil is not a dependency of this project)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def descendants(pid: int) -> list[int]:
    """The process's children, grandchildren ... (e.g. DataLoader processes), from each process's parent id."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        children = parents.get(queue.pop(), [])
        found += children
        queue += children
    return found


class PeakRss:
    """Samples the RSS of a process and its children (e.g. DataLoader processes) in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak = self.current = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def sample(self) -> int:
        total = rss_bytes(self.pid)
        for child in descendants(self.pid):
            with contextlib.suppress(OSError):  # a loader process that just ended
                total += rss_bytes(child)
        return total

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.current = self.sample()
            except OSError:  # the worker stopped
                return
            self.peak = max(self.peak, self.current)
            time.sleep(self.interval)

    def reset(self) -> int:
        """The peak so far, then start a new one."""
        peak, self.peak = self.peak, self.current
        return peak


def one_size(rows: int, data: tuple, weights: Path, log_dir: Path) -> dict[str, Any]:
    key = "bench-" + secrets.token_hex(8)
    mb = 1 << 20
    with tempfile.TemporaryDirectory(prefix=f"mcu-memory-{rows}-") as tmp:
        data_dir = Path(tmp)
        (data_dir / "upload").mkdir()
        manifest, shards = write_upload(data_dir / "upload", rows, data)
        env = embedded_env(data_dir / "service", key)
        port = free_port()
        api = spawn(["-m", "cli", "serve", "--port", str(port)], env, log_dir / f"api-{rows}.log")
        worker = spawn(["-m", "cli", "worker"], env, log_dir / f"worker-{rows}.log")
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/readyz", api, log_dir / f"api-{rows}.log")
            rss = PeakRss(worker.pid)
            time.sleep(5)  # the worker's imports and start
            phases: dict[str, float] = {"idle": rss.reset() / mb}
            client = Client(f"http://127.0.0.1:{port}", key, timeout=600)
            began = time.perf_counter()
            dataset = client.create_dataset(f"memory-{rows}", manifest, [(s.name, s) for s in shards])
            upload_s = time.perf_counter() - began
            model = client.create_model("memory", "cnn-small", 10, dataset.id, weights, "dataset")
            assert client.wait_model(model.id, timeout=1800).state == "ready"
            phases["validation"] = rss.reset() / mb
            forget = np.random.default_rng(1).choice(rows, FORGET_ROWS, replace=False)
            ids = [f"c{i // 60_000}-{i % 60_000}" for i in sorted(forget.tolist())]
            began = time.perf_counter()
            request = client.create_request(model.id, {"sample_ids": ids}, base_method=BASE_METHOD, config=JOB)
            body = client.wait(request.id, "awaiting_selection", timeout=7200, interval=1.0)
            job_s = time.perf_counter() - began
            phases["job"] = rss.reset() / mb
            client.select(request.id, body.curve.recommended_t, ACK)
            client.wait(request.id, "succeeded", timeout=3600, interval=1.0)
            phases["materialize"] = rss.reset() / mb
            rss.stopped.set()
            peak = max(phases[p] for p in ("validation", "job", "materialize"))
            cache = sum(p.stat().st_size for p in (data_dir / "service" / "cache").iterdir()) / mb
            return {
                "rows": rows,
                "peak_rss_mb": round(peak, 1),
                **{f"{k}_mb": round(v, 1) for k, v in phases.items()},
                "pixels_mb": round(rows * 784 / mb, 1),
                "cache_mb": round(cache, 1),
                "upload_s": round(upload_s, 1),
                "job_s": round(job_s, 1),
            }
        finally:
            stop(worker)
            stop(api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="train rows, multiples of 60000")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    data = base_images()
    print(f"data: {data[4]} ({len(data[0])} train + {len(data[2])} test images, 28x28 grey)", flush=True)
    with tempfile.TemporaryDirectory(prefix="mcu-memory-") as tmp:
        weights = Path(tmp) / "weights.safetensors"
        trained_weights(weights, data)
        log_dir = Path(tmp)
        results = []
        for rows in (int(s) for s in args.sizes.split(",")):
            print(f"{rows} rows ...", flush=True)
            results.append(one_size(rows, data, weights, log_dir))
            print(results[-1], flush=True)
    headers = ["rows", "pixels MB", "idle MB", "validation MB", "job MB", "materialize MB", "peak MB", "job s"]
    print(
        markdown_table(
            headers,
            [
                [
                    r["rows"],
                    r["pixels_mb"],
                    r["idle_mb"],
                    r["validation_mb"],
                    r["job_mb"],
                    r["materialize_mb"],
                    r["peak_rss_mb"],
                    r["job_s"],
                ]
                for r in results
            ],
        )
    )
    write_json(
        args.json,
        {
            "machine": machine_info(),
            "data": data[4],
            "job": JOB,
            "base_method": BASE_METHOD,
            "forget_rows": FORGET_ROWS,
            "results": results,
        },
    )
    if len(results) >= 2:
        first, last = results[0]["peak_rss_mb"], results[-1]["peak_rss_mb"]
        print(f"memory: rss_60k={first:.0f} rss_600k={last:.0f} ratio={last / first:.2f}")


if __name__ == "__main__":
    main()
