#!/usr/bin/env bash
# `make deploy-test`: build the images and run the whole docker-compose stack on this machine, with no
# registry and no GPU: Postgres, Redis and an S3 server from Debian's packages and PyPI
# (docker-compose.local.yml), the API and worker images from docker/Dockerfile.* with build arguments.
# Then the demo flow over HTTP from the host, a worker killed mid-curve and resumed, a Redis restart
# with a request queued, and two worker containers at once (docker/local/deploy_test.py). The stack is
# removed at the end (down -v), and the Docker daemon stopped if this script started it.
# The daemon's data (images, build cache) stays in MCU_DEPLOY_TEST_DIR between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
STATE=${MCU_DEPLOY_TEST_DIR:-/var/lib/mcu-deploy-test}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export DOCKER_BUILDKIT=0 COMPOSE_PROJECT_NAME=mcu-deploy-test COMPOSE_FILE=$STATE/compose.yml
started_daemon=""
stack_up=""
ok=""

say() { echo "deploy-test: $*"; }
seconds_since() { echo $(($(date +%s) - $1)); }

finish() {
  status=$?
  if [[ -n $stack_up ]]; then
    [[ -n $ok ]] || docker-compose logs --no-color --tail 60 >&2 || true
    docker-compose down -v --remove-orphans >/dev/null 2>&1 || say "docker-compose down failed"
  fi
  if [[ -n $started_daemon ]]; then
    kill "$started_daemon" && wait "$started_daemon" || true
  fi
  [[ -n $ok ]] || say "FAILED (exit $status)"
}
trap finish EXIT

# A Docker daemon: the one configured (DOCKER_HOST, /var/run/docker.sock), or a private one under $STATE
# that leaves the host's network rules alone.
mkdir -p "$STATE/run"
if ! docker info >/dev/null 2>&1; then
  export DOCKER_HOST=unix://$STATE/run/docker.sock
  if ! docker info >/dev/null 2>&1; then
    say "starting a private dockerd in $STATE"
    dockerd --host "$DOCKER_HOST" --data-root "$STATE/root" --exec-root "$STATE/run/exec" \
      --pidfile "$STATE/run/dockerd.pid" --iptables=false --ip-masq=false --bridge=none \
      >"$STATE/run/dockerd.log" 2>&1 &
    started_daemon=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null || { tail -20 "$STATE/run/dockerd.log"; exit 1; }
  fi
fi

build() {  # build TAG DOCKERFILE CONTEXT [ARGS...]: the daemon's layer cache makes repeated runs quick
  local tag=$1 file=$2 context=$3
  shift 3
  docker build -q --network host -f "$file" -t "$tag" "$@" "$context" >/dev/null 2>"$STATE/run/build.log" \
    || { cat "$STATE/run/build.log" >&2; say "build of $tag failed"; exit 1; }
}

build_started=$(date +%s)
if ! docker image inspect mcu-local/debian:bookworm >/dev/null 2>&1; then
  mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)}
  mirror=${mirror:-http://deb.debian.org/debian}
  say "making the Debian base image with debootstrap from $mirror"
  rm -rf "$STATE/rootfs"
  debootstrap --variant=minbase bookworm "$STATE/rootfs" "$mirror" >"$STATE/run/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/run/debootstrap.log"; exit 1; }
  tar -C "$STATE/rootfs" -c . | docker import - mcu-local/debian:bookworm >/dev/null
  rm -rf "$STATE/rootfs"
fi
mkdir -p "$STATE/python-context"
cp "$CA_BUNDLE" "$STATE/python-context/ca-certificates.crt"
say "building images (cached between runs)"
build mcu-local/python:3.11 docker/local/Dockerfile.python "$STATE/python-context"
build mcu-local/postgres:deploy-test docker/local/Dockerfile.postgres docker/local
build mcu-local/redis:deploy-test docker/local/Dockerfile.redis docker/local
build mcu-local/s3:deploy-test docker/local/Dockerfile.s3 docker/local
build mcu-api:deploy-test docker/Dockerfile.api . --build-arg PYTHON_IMAGE=mcu-local/python:3.11
build mcu-worker:deploy-test docker/Dockerfile.worker . --build-arg CUDA_IMAGE=mcu-local/python:3.11 \
  --build-arg TORCH_INDEX_URL=https://pypi.org/simple
build_seconds=$(seconds_since "$build_started")
for image in mcu-api:deploy-test mcu-worker:deploy-test; do
  say "$image: $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}')"
done

api_port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" docker/local/deploy_test.py env "$STATE/env" "$api_port"
"$PY" docker/local/compose_local.py "$STATE/env" "$COMPOSE_FILE"

up_started=$(date +%s)
docker-compose down -v --remove-orphans >/dev/null 2>&1 || true  # what an interrupted run left
stack_up=1
say "docker-compose up -d"
docker-compose up -d --no-build 2>&1 | sed 's/^/  /'
for _ in $(seq 120); do
  [[ $(docker inspect -f '{{.State.Health.Status}}' "$(docker-compose ps -q api)") == healthy ]] && break
  sleep 2
done
[[ $(docker inspect -f '{{.State.Health.Status}}' "$(docker-compose ps -q api)") == healthy ]] \
  || { say "the api did not turn healthy"; exit 1; }
worker_ready() { docker-compose logs worker 2>&1 | grep ' ready\.' >/dev/null; }
for _ in $(seq 120); do worker_ready && break; sleep 2; done
worker_ready || { say "the worker did not start"; exit 1; }
up_seconds=$(seconds_since "$up_started")

api_key=$(sed -n 's/^MCU_BOOTSTRAP_API_KEY=//p' "$STATE/env")
flow_started=$(date +%s)
say "demo flow against http://127.0.0.1:$api_port"
MCU_API_KEY=$api_key "$PY" -m cli demo --url "http://127.0.0.1:$api_port" | sed 's/^/  /'
flow_seconds=$(seconds_since "$flow_started")

recovery_started=$(date +%s)
"$PY" docker/local/deploy_test.py recovery "$STATE/env"
recovery_seconds=$(seconds_since "$recovery_started")

docker-compose down -v --remove-orphans >/dev/null 2>&1
stack_up=""
ok=1
say "recovery checks took ${recovery_seconds}s"
echo "deploy-test ok: build ${build_seconds}s, up ${up_seconds}s, flow ${flow_seconds}s, resume ok"
