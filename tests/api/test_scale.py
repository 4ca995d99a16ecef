"""Registration and forget-set resolution at realistic sizes (tiny tensors, many samples)."""

from __future__ import annotations

import time

from .conftest import Service, manifest_bytes, shard_bytes, validated

N_SAMPLES = 200_000
N_FORGET = 10_000


def test_200k_sample_dataset_registers_and_10k_ids_resolve(service: Service) -> None:
    n_train = N_SAMPLES - 20_000
    rows = [
        (f"img-{i:06d}", "train" if i < n_train else "test", "big.safetensors", i, f"user{i // 10}")
        for i in range(N_SAMPLES)
    ]
    manifest = manifest_bytes(rows)
    shard = shard_bytes(N_SAMPLES, num_classes=10, shape=(1, 2, 2))

    started = time.perf_counter()
    created = service.client.post(
        "/v1/datasets",
        data={"name": "scale"},
        files=[("manifest", ("manifest.csv", manifest)), ("shards", ("big.safetensors", shard))],
    )
    register_s = time.perf_counter() - started
    assert created.status_code == 201, created.text
    assert created.json()["num_train"] == n_train

    from safetensors.torch import save

    from unlearning.architectures import seeded_init

    weights = save(seeded_init("mlp", 10, (1, 2, 2), 0).state_dict())
    model = service.client.post(
        "/v1/models",
        data={
            "name": "scale",
            "architecture": "mlp",
            "num_classes": "10",
            "preprocessing": "unit",
            "dataset_id": created.json()["id"],
        },
        files={"weights": ("w.safetensors", weights)},
    )
    assert validated(service, model)["state"] == "ready"

    forget_ids = [f"img-{i:06d}" for i in range(0, N_FORGET * 17, 17)]
    started = time.perf_counter()
    request = service.client.post(
        "/v1/deletion-requests", json={"model_id": model.json()["id"], "forget": {"sample_ids": forget_ids}}
    )
    resolve_s = time.perf_counter() - started
    assert request.status_code == 202, request.text
    assert request.json()["forget_count"] == N_FORGET
    print(
        f"\n[{service.name}] register {N_SAMPLES} samples: {register_s:.2f}s; "
        f"resolve {N_FORGET} sample ids: {resolve_s:.2f}s"
    )
    assert register_s < 30 and resolve_s < 10  # generous bounds for a loaded 2-core CI machine
