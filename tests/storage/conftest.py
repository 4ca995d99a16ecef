import pytest

from storage import ObjectStore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """The same behavioural tests run against both backends."""
    return request.getfixturevalue(f"{request.param}_store")
