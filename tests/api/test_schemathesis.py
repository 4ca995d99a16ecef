"""Property-based requests generated from /openapi.json against the live service: never a 5xx.

For every operation of the schema, Schemathesis generates valid and invalid inputs (NUL characters
included), sent with the bootstrap key over real HTTP to the running uvicorn, and `not_a_server_error`
checks each response. Bounded to a few examples per operation, with a fixed seed, so it stays quick.

Schemathesis' own pytest integration (`schemathesis.pytest.from_fixture`) does not run under pytest 9
(it sets `node._nodeid`), so the operations are driven through `APIOperation.as_strategy` and reported
as subtests.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from .conftest import BOOTSTRAP_KEY, Service

MAX_EXAMPLES = 25
AUTH = {"Authorization": f"Bearer {BOOTSTRAP_KEY}"}


@pytest.fixture(scope="module")
def api_schema(service: Service) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({"headers": AUTH, "generation": {"allow-x00": True}})
    return schemathesis.openapi.from_url(f"{service.url}/openapi.json", config=config)


def test_openapi_has_the_operations(api_schema: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert {
        "POST /v1/datasets",
        "POST /v1/models",
        "POST /v1/deletion-requests",
        "POST /v1/deletion-requests/{request_id}/selection",
        "GET /v1/models/{model_id}/versions/{version}/weights",
    } <= labels


def test_no_server_error(api_schema: schemathesis.BaseSchema, service: Service, subtests: pytest.Subtests) -> None:
    """Up to MAX_EXAMPLES generated requests per operation, valid and invalid; any 5xx fails its subtest."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
            operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
        )

        @seed(20260101)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def no_5xx(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=service.url, headers=AUTH, checks=[not_a_server_error], timeout=30)

        with subtests.test(operation=operation.label):
            no_5xx()


def test_openapi_declares_every_error_as_problem_json(service: Service) -> None:
    schema = service.client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            for code in ("401", "403", "404", "422"):
                content = operation["responses"][code]["content"]
                assert list(content) == ["application/problem+json"], (method, path, code)
    assert {"required": ["classes"]} in schema["components"]["schemas"]["ForgetIn"]["oneOf"]
    states = schema["components"]["schemas"]["State"]["enum"]
    assert states == [
        "awaiting_approval",
        "queued",
        "running",
        "awaiting_selection",
        "materializing",
        "succeeded",
        "failed",
        "cancelling",
        "cancelled",
    ]
