"""The checks of `make deploy-test` (docker/local/deploy-test.sh) against the running compose stack, over
HTTP from the host as a client would, and with docker / docker-compose for the failures:

    python docker/local/deploy_test.py env OUT_FILE API_PORT   # .env.example with fresh secrets (0600)
    python docker/local/deploy_test.py recovery ENV_FILE       # resume, Redis restart, two workers

`recovery`: a worker container killed mid-curve resumes the request from its checkpoint; a request
queued while Redis restarts is kept; two worker containers run two requests at once.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cli.demo import register_digits  # noqa: E402  (after the path: run as a script from anywhere)
from mcu_client import Client, wait_for  # noqa: E402  (wait_for: the project's one polling loop)
from settings import EXAMPLE_SECRET_MARKER  # noqa: E402

SLOW_CURVE = {"epochs": 10, "batch_size": 8, "retain_ratio": 1.0, "grid_points": 5, "base": {"epochs": 2}}
FAST_JOB = {"epochs": 3, "grid_points": 5, "base": {"epochs": 4}}
# One pass of 81 points: long enough on digits for the idle second worker to load the job's inputs and join. With 41
# the owner of a fast host measured all of them once (2026-12-06, a 2-core EPYC: 41 + 0, and 40 + 1 the run before).
WIDE_POINTS = 81
WIDE_GRID = {"epochs": 2, "grid_points": WIDE_POINTS, "grid_refine": False, "base": {"epochs": 2}}
# A killed worker's job is taken over once its heartbeat is older than MCU_HEARTBEAT_TIMEOUT_SECONDS
# (120 s, compose's default) by the next reconciler round (every 30 s).
RESUME_TIMEOUT = 420


def write_env(out_file: str, api_port: str) -> None:
    """.env.example with every example secret replaced, workers on the CPU, ports clear of this host's."""
    postgres, redis_password = secrets.token_hex(16), secrets.token_hex(16)
    values = {
        "POSTGRES_PASSWORD": postgres,
        "MCU_DATABASE_URL": f"postgresql+psycopg://mcu:{postgres}@postgres:5432/mcu",
        "REDIS_PASSWORD": redis_password,
        "MCU_BROKER_URL": f"redis://:{redis_password}@redis:6379/0",
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
        "MCU_BOOTSTRAP_API_KEY": secrets.token_hex(32),
        "MCU_WEBHOOK_SECRET": "whsec_" + base64.b64encode(os.urandom(32)).decode(),
        "MCU_DEVICE": "cpu",
        "MCU_PUBLISH_ADDR": "127.0.0.2",  # this host's own Postgres and Redis hold 127.0.0.1:5432 and :6379
        "MCU_API_PORT": api_port,
        "MCU_API_IMAGE": "mcu-api:deploy-test",
        "MCU_WORKER_IMAGE": "mcu-worker:deploy-test",
    }
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if key in values:
            line = f"{key}={values.pop(key)}"
        elif EXAMPLE_SECRET_MARKER in value and not line.startswith("#"):  # any other example secret
            line = f"{key}={secrets.token_hex(24)}"
        lines.append(line)
    lines += [f"{key}={value}" for key, value in values.items()]
    descriptor = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("\n".join(lines) + "\n")


def read_env(path: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in Path(path).read_text().splitlines() if "=" in line)
    return {key: value for key, _, value in pairs if not key.startswith("#")}


def compose(*args: str) -> str:
    """docker-compose on the deploy test's project (COMPOSE_FILE and COMPOSE_PROJECT_NAME are set)."""
    return subprocess.run(["docker-compose", *args], check=True, capture_output=True, text=True).stdout


def step(message: str) -> None:
    print(f"deploy-test: {message}", flush=True)


def submit(client: Client, model_id: str, forget_class: int, config: dict, selection: str | None = None) -> str:
    """A request to forget one class (a class already erased from the model would be a 409)."""
    return client.create_request(
        model_id,
        {"classes": [forget_class]},
        base_method="rl",
        config=config,
        selection=selection,
        idempotency_key=secrets.token_hex(8),
    ).id


def in_curve_epoch(client: Client, request_id: str, epoch: int) -> bool:
    progress = client.get_request(request_id).progress
    return progress.phase == "curve" and (progress.epoch or 0) >= epoch


def worker_containers() -> list[str]:
    return compose("ps", "-q", "worker").split()


def wait_workers_ready(count: int) -> None:
    def ready() -> bool:
        containers = worker_containers()
        logs = [subprocess.run(["docker", "logs", c], capture_output=True, text=True, check=False) for c in containers]
        return len(containers) == count and all(" ready." in log.stdout + log.stderr for log in logs)

    wait_for(ready, 180, f"{count} worker container(s) to be ready", interval=1)


def killed_worker_resumes(client: Client, model_id: str) -> None:
    request_id = submit(client, model_id, 3, SLOW_CURVE)
    wait_for(lambda: in_curve_epoch(client, request_id, 3), 300, "curve training to reach epoch 3", 0.3)
    (container,) = worker_containers()
    subprocess.run(["docker", "kill", container], check=True, capture_output=True)
    # The progress shown was written before the kill (at most once a second): training may have gone further.
    reported = client.get_request(request_id).progress.epoch
    step(f"killed worker container {container[:12]} after it reported curve epoch {reported} under way")
    assert client.get_request(request_id).state == "running"
    compose("up", "-d", "--no-deps", "worker")
    request = client.wait(request_id, "awaiting_selection", timeout=RESUME_TIMEOUT)
    events = list(client.events(request_id))
    resumed = [e.detail or {} for e in events if e.type == "resumed_from_checkpoint"]
    assert resumed and resumed[0]["epoch"] >= 2, "the job started over instead of resuming"
    assert any(e.type == "resumed" for e in events)
    assert request.curve is not None
    client.select(request_id, request.curve.recommended_t)
    client.wait(request_id, "succeeded", timeout=300)
    step(f"request resumed from its checkpoint with {resumed[0]['epoch']} curve epochs done, and succeeded")


def queue_length(env: dict[str, str]) -> int:
    out = compose("exec", "-T", "redis", "redis-cli", "--no-auth-warning", "-a", env["REDIS_PASSWORD"], "llen", "gpu")
    return int(out.strip())


def redis_restart_keeps_the_queue(client: Client, model_id: str, env: dict[str, str]) -> None:
    compose("stop", "worker")
    request_id = submit(client, model_id, 5, FAST_JOB, selection="auto")
    wait_for(lambda: queue_length(env) > 0, 30, "the task to reach Redis")
    compose("restart", "redis")
    wait_for(lambda: "healthy" in compose("ps", "redis"), 60, "Redis to be healthy again")
    assert queue_length(env) > 0, "Redis lost the queued task in its restart"
    compose("up", "-d", "--no-deps", "worker")
    # Claimed well before MCU_REQUEUE_AFTER_SECONDS (300 s) after submission, when the reconciler would
    # re-send it: the message kept by Redis is what ran.
    client.wait(request_id, ("running", "awaiting_selection", "materializing", "succeeded"), timeout=180)
    client.wait(request_id, ("succeeded",), timeout=240)
    step("a request queued across a Redis restart ran and succeeded")


def two_workers_run_two_requests(client: Client, model_id: str) -> None:
    compose("up", "-d", "--no-deps", "--scale", "worker=2", "worker")
    wait_workers_ready(2)
    first, second = submit(client, model_id, 7, SLOW_CURVE), submit(client, model_id, 8, SLOW_CURVE)
    wait_for(
        lambda: all(client.get_request(r).state == "running" for r in (first, second)),
        120,
        "both requests to run at once",
        0.2,
    )
    workers = []
    for request_id in (first, second):
        claimed = [
            e.detail or {} for e in client.events(request_id) if e.type == "state_changed" and e.state == "running"
        ]
        workers.append(claimed[0]["worker"])
    assert workers[0] != workers[1], f"both requests ran on {workers[0]}"
    containers = {c[:12] for c in worker_containers()}
    assert {w.rsplit("-", 1)[0] for w in workers} == containers, (workers, containers)
    for request_id in (first, second):
        client.wait(request_id, "awaiting_selection", timeout=300)
    step(f"two requests ran at the same time on workers {workers[0]} and {workers[1]}")


def workers_run_on_jemalloc() -> None:
    """`mcu worker` runs itself again on jemalloc (worker/allocator.py), which the worker image installs."""
    for container in worker_containers():
        maps = ["docker", "exec", container, "sh", "-c", "grep -l libjemalloc /proc/[0-9]*/maps"]
        found = subprocess.run(maps, capture_output=True, text=True, check=False).stdout.split()
        assert found, f"no process of worker container {container[:12]} runs on jemalloc"
    step("the worker processes run on jemalloc")


def one_grid_on_two_workers(client: Client, model_id: str) -> None:
    """Both workers idle: one request's grid is measured by both (MCU_GRID_FANOUT, on in docker-compose.yml)."""
    request_id = submit(client, model_id, 6, WIDE_GRID)
    client.wait(request_id, "awaiting_selection", timeout=300)
    training = client.get_request(request_id).training
    by_worker = training.grid_points_by_worker if training is not None else None
    assert by_worker and len(by_worker) == 2 and sum(by_worker.values()) == WIDE_POINTS, by_worker
    step(f"one request's {WIDE_POINTS}-point grid was measured by both workers: {by_worker}")


def recovery(env_file: str) -> None:
    env = read_env(env_file)
    url = f"http://127.0.0.1:{env['MCU_API_PORT']}"
    with Client(url, env["MCU_BOOTSTRAP_API_KEY"]) as client:
        _, model_id = register_digits(client)
        workers_run_on_jemalloc()
        killed_worker_resumes(client, model_id)
        redis_restart_keeps_the_queue(client, model_id, env)
        two_workers_run_two_requests(client, model_id)
        one_grid_on_two_workers(client, model_id)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"env": write_env, "recovery": recovery}[command](*args)
