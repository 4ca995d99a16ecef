"""Session-wide fixtures: S3 as moto's server mode on a loopback port, reached over HTTP by boto3 exactly
as MinIO or AWS would be (never moto's in-process mocks), and the digits upload."""

from __future__ import annotations

import os
import sys

# One PyTorch thread in this process and in every process it starts (`mcu worker` pins its own to
# MCU_TORCH_THREADS, 1, too). PyTorch's default is a thread per core: on a 2-core machine shared with another
# job that oversubscribes the cores, and a 5-second test was measured running past 150 s. The variables take
# effect when torch loads, which tests do after this file; a plugin that loaded it earlier is pinned here.
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
if "torch" in sys.modules:
    sys.modules["torch"].set_num_threads(1)
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, event

if TYPE_CHECKING:
    from cli.digits import DigitsUpload
    from storage import LocalStore, S3Store


@pytest.fixture(scope="session")
def digits_upload() -> DigitsUpload:
    """sklearn's digits and a cnn-small trained on them with the "unit" preprocessing, as uploads."""
    from cli.digits import digits_upload as build

    return build()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a moto S3 server on 127.0.0.1 (a free port the OS picks) with dummy credentials."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        # Dummy credentials only: hide any real profile or session token from this test session.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.delenv(name, raising=False)
        no_file = str(tmp_path_factory.mktemp("aws") / "absent")
        env.setenv("AWS_CONFIG_FILE", no_file)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", no_file)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("NO_PROXY", ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])))

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()  # port 0 above: read back the port the OS bound
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str) -> S3Store:
    """An S3Store on a fresh, uniquely named bucket."""
    from storage import S3Store

    store = S3Store(f"test-{uuid.uuid4().hex[:16]}", endpoint_url=s3_endpoint)
    store.ensure_bucket()
    return store


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    from storage import LocalStore

    return LocalStore(tmp_path / "store")


# Every engine a test makes (worker.services.connect, create_app) keeps its idle Postgres connections for as long
# as the process lives: the session factory's event listeners hold it. Over a whole run one test process gathered
# about 50, and `make test`'s two processes then passed the server's max_connections (100). After each test the
# idle ones are closed; an engine still in use opens new ones as it needs them.
_POSTGRES_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


@event.listens_for(Engine, "engine_connect")
def _remember_postgres_engine(connection) -> None:
    if connection.engine.dialect.name == "postgresql":
        _POSTGRES_ENGINES.add(connection.engine)


@pytest.fixture(autouse=True)
def _idle_postgres_connections_closed() -> Iterator[None]:
    yield
    for engine in list(_POSTGRES_ENGINES):
        engine.dispose()
