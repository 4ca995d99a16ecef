# Set-up and checks. `make run` and `make test` each install everything they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PyTorch build to install; override for another platform (e.g. TORCH_SPEC="torch torchvision").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# A real Fides for tests/e2e/test_fides.py, in a venv of its own: it pins its own sqlalchemy, fastapi, redis...
FIDES_VENV ?= .venv-fides
FIDES_SPEC ?= ethyca-fides==2.78.2

.PHONY: install lint test mutate run deploy-test clean

install: $(VENV)/.installed $(FIDES_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[worker,dev,bench]'
	touch $@

# Built once (about 2 minutes, 800 MB); `rm -rf .venv-fides` to rebuild it.
$(FIDES_VENV)/.installed:
	$(PYTHON) -m venv $(FIDES_VENV)
	$(FIDES_VENV)/bin/python -m pip install -q --upgrade pip
	$(FIDES_VENV)/bin/python -m pip install -q $(FIDES_SPEC)
	touch $@

# Lint, formatting and types ([tool.ruff] and [tool.mypy] in pyproject.toml), then the deployment files:
# hadolint on every Dockerfile, and Compose's own check of docker-compose.yml (Debian's docker-compose 1.29
# here; .ci/run installs it) with .env.example standing in for .env.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/hadolint docker/Dockerfile.* docker/local/Dockerfile.*
	@command -v docker-compose >/dev/null || { echo "make lint needs docker-compose: apt-get install docker-compose"; exit 1; }
	docker-compose --env-file .env.example -f docker-compose.yml config -q

# Two pytest-xdist processes, a test file each at a time: the end-to-end tests wait on worker subprocesses much
# of the time, so one process left a core idle (2-core machine: 12.9 min in one, see docs/design.md#tests).
test: lint
	$(PY) -m pytest -n 2 --dist loadfile

# Breaks one behaviour that matters at a time, in a temporary copy of the tree, and checks that the tests
# catch it (tests/mutate.py; about 5 minutes on 2 cores). Not part of `make test`.
mutate: install
	$(PY) tests/mutate.py

# The docker-compose stack built and run on this machine, killed and recovered (docker/local/deploy-test.sh):
# needs root, Debian's docker.io, docker-compose and debootstrap; no registry, no GPU. Not part of `test`.
deploy-test: install
	PY=$(abspath $(PY)) bash docker/local/deploy-test.sh

run: $(VENV)/.installed  # the demo needs no Fides
	$(VENV)/bin/mcu demo

clean:
	rm -rf $(VENV) $(FIDES_VENV) .mcu .pytest_cache .ruff_cache .mypy_cache
