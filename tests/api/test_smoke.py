from .conftest import Service


def test_health_and_readiness(service: Service, registered: dict[str, str]) -> None:
    anonymous = service.anonymous()
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert anonymous.get("/readyz").status_code == 200
    assert service.client.get(f"/v1/models/{registered['model_id']}").status_code == 200
