"""The API process never imports PyTorch: it serves every route with torch made uninstallable.

The check runs in a fresh interpreter whose import system refuses torch, torchvision, scipy and sklearn,
as in the API image (docker/Dockerfile.api installs only pyproject's base dependencies).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "scipy", "sklearn"):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, NotInstalled())

    import numpy as np
    from fastapi.testclient import TestClient

    from api.app import create_app
    from settings import Settings
    from storage import save_numpy
    from tests.api.conftest import shard_bytes, simple_manifest

    client = TestClient(create_app(Settings(data_dir=sys.argv[1], bootstrap_api_key="k")),
                        headers={"Authorization": "Bearer k"})
    dataset = client.post("/v1/datasets", data={"name": "d"}, files=[
        ("manifest", ("m.csv", simple_manifest(40, 20))), ("shards", ("a.safetensors", shard_bytes(60)))])
    assert dataset.status_code == 201, dataset.text
    weights = save_numpy({"1.weight": np.zeros((4, 16), np.float32), "1.bias": np.zeros(4, np.float32)})
    model = client.post("/v1/models", data={"name": "m", "architecture": "vgg11", "num_classes": "100000",
                                            "preprocessing": "imagenet", "input_transform": '{"resize": 8}',
                                            "augmentation": "crop_flip",
                                            "dataset_id": dataset.json()["id"]},
                        files={"weights": ("w.safetensors", weights)})
    assert model.status_code == 201 and model.json()["state"] == "validating", model.text
    model_id = model.json()["id"]
    request = client.post("/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": ["s1"]},
                                                          "config": {"epochs": 2}})
    assert request.status_code == 409 and "not ready" in request.json()["detail"], request.text
    bad_config = client.post("/v1/deletion-requests", json={"model_id": model_id, "forget": {"classes": [0]},
                                                             "config": {"epochz": 2}})
    assert bad_config.status_code == 422 and "epochz" in bad_config.text, bad_config.text
    for path in ("/v1/datasets", "/v1/models", f"/v1/models/{model_id}/versions", "/v1/deletion-requests",
                 f"/v1/models/{model_id}/versions/1/weights", "/v1/meta", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "scipy", "sklearn"))
    assert not loaded, loaded
    print("served without torch")
""")


def test_the_api_serves_every_route_without_torch(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "served without torch" in done.stdout
