"""`mcu_client` against the live API: typed answers, problem+json as typed exceptions, pages as iterators, and
models that match the OpenAPI document."""

from __future__ import annotations

import pytest

from mcu_client import Client, Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from mcu_client import types as client_types

from .conftest import Service, mlp_weights, shard_bytes, simple_manifest

SCHEMAS = {
    "Dataset": "DatasetOut",
    "Model": "ModelOut",
    "Version": "VersionOut",
    "DeletionRequest": "DeletionRequestOut",
    "DeletionRequestDetail": "DeletionRequestDetailOut",
    "Timings": "TimingsOut",
    "Training": "TrainingOut",
    "Rollback": "RollbackOut",
    "Curve": "CurveOut",
    "CurvePoint": "CurvePointOut",
    "Event": "EventOut",
    "Progress": "ProgressOut",
    "Selection": "SelectionOut",
    "Identity": "IdentityOut",
    "Extension": "ExtensionOut",
    "Approval": "ApprovalOut",
    "ErasureCriterion": "ErasureCriterionOut",
    "SigningKey": "SigningKeyOut",
    "SigningKeys": "SigningKeysOut",
    "Meta": "MetaOut",
    "BaseMethod": "BaseMethodOut",
    "Erasure": "ErasureOut",
    "FiledRequest": "FiledRequestOut",
    "SkippedModel": "SkippedModelOut",
    "BulkResult": "BulkResultOut",
}
NEWER_FIELDS: set[str] = set()  # fields the client reads before this server sends them


@pytest.fixture
def client(service: Service) -> Client:
    return Client(http=service.client)


def test_client_models_match_the_openapi_document(service: Service) -> None:
    schemas = service.client.get("/openapi.json").json()["components"]["schemas"]
    for ours, theirs in SCHEMAS.items():
        fields = set(getattr(client_types, ours).model_fields)
        properties = set(schemas[theirs]["properties"])
        assert fields - NEWER_FIELDS <= properties, (ours, fields - properties)
        assert set(schemas[theirs].get("required", [])) <= fields, (ours, set(schemas[theirs]["required"]) - fields)


def test_register_submit_page_and_cancel(client: Client, service: Service) -> None:
    dataset = client.create_dataset(
        "client-tiny", simple_manifest(40, 20), [("a.safetensors", shard_bytes(60))], description="from the client"
    )
    assert (dataset.num_train, dataset.num_test, dataset.num_classes) == (40, 20, 3)
    assert client.get_dataset(dataset.id).description == "from the client"
    model = client.create_model("client-mlp", "mlp", 3, dataset.id, mlp_weights(), "unit")
    assert model.state == "validating" and model.preprocessing.preset == "unit"
    with pytest.raises(Conflict, match=r"not ready|validating"):  # no worker here: it stays validating
        client.create_request(model.id, {"classes": [0]})
    assert [v.version for v in client.versions(model.id)] == [1]
    created = [
        client.get_dataset(
            client.create_dataset(f"page-{i}", simple_manifest(4, 2), [("a.safetensors", shard_bytes(6))]).id
        )
        for i in range(3)
    ]
    listed = [d.id for d in client.datasets(page_size=2)]  # several pages, fetched as iterated
    assert {d.id for d in created} <= set(listed) and len(listed) == len(set(listed))


def test_problems_become_typed_exceptions(client: Client, service: Service, registered: dict[str, str]) -> None:
    with pytest.raises(NotFound) as missing:
        client.get_request("req_nonexistent")
    assert missing.value.status == 404 and missing.value.detail
    with pytest.raises(InvalidInput) as invalid:
        client.create_request(registered["model_id"], {"sample_ids": ["no-such-sample"]})
    assert "no-such-sample" in invalid.value.detail and invalid.value.errors
    request = client.create_request(registered["model_id"], {"sample_ids": ["s1"]}, config={"epochs": 1})
    assert request.state == "queued" and request.forget_count == 1
    assert request.id in [r.id for r in client.requests(model_id=registered["model_id"], state="queued")]
    assert client.cancel(request.id).state == "cancelled"  # no worker here: still queued, cancelled at once
    with pytest.raises(Conflict):
        client.select(request.id, 0.5)
    assert [e.state for e in client.events(request.id) if e.type == "state_changed"] == ["queued", "cancelled"]
    with pytest.raises(Unauthorized), Client(service.url, "mcu_wrong") as stranger:
        stranger.whoami()
    assert client.whoami().name == "bootstrap"


def test_a_scoped_key_learns_its_scopes_and_is_refused_the_rest(service: Service) -> None:
    from api.auth import create_api_key

    with service.app.state.session_factory() as session, session.begin():  # type: ignore[attr-defined]
        _, secret = create_api_key(session, f"reader-{service.name}-{id(session)}", ["requests:read"])
    with Client(service.url, secret) as reader:
        assert reader.whoami().scopes == ["requests:read"]
        with pytest.raises(Forbidden, match="models:read"):
            next(reader.models())
