"""What the service reports is what the user gets: models trained outside the service's code with the
user's own preprocessing, erased through the HTTP API, downloaded and run in the user's own pipeline.

The training loop, the network definition and the preprocessing below are the test's own (plain torch);
only the architecture's name ("cnn-small") and its layer layout are shared with the service, as they would
be for any user.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load, save
from torch import nn

from cli.digits import DigitsUpload
from tests.support import wait_for_state, wait_model

from .conftest import FAST_JOB, Stack, submit

FORGET_CLASS = 3
Preprocess = Callable[[torch.Tensor], torch.Tensor]
PREPROCESSINGS: dict[str, tuple[str, Preprocess]] = {
    "unit": ("unit", lambda x: x.float() / 255),
    "mean-std": (json.dumps({"mean": [0.25], "std": [0.3]}), lambda x: (x.float() / 255 - 0.25) / 0.3),
}


def users_network() -> nn.Module:
    """The user's CNN, laid out as the service's `cnn-small` for 1×8×8 inputs and 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, 10))


def user_accuracy(weights: bytes, inputs: torch.Tensor, labels: torch.Tensor, preprocess: Preprocess) -> float:
    network = users_network()
    network.load_state_dict(load(weights))
    with torch.no_grad():
        return float((network.eval()(preprocess(inputs)).argmax(1) == labels).float().mean())


@pytest.fixture(scope="module")
def splits(digits_upload: DigitsUpload) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    shard = load(digits_upload.shard)
    n_train = len(digits_upload.train_labels)
    x, y = shard["inputs"], shard["labels"]
    train_x, train_y, test_x, test_y = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    forget, kept = train_y == FORGET_CLASS, test_y != FORGET_CLASS
    return {"forget": (train_x[forget], train_y[forget]), "retain": (train_x[~forget], train_y[~forget]),
            "test": (test_x[kept], test_y[kept]), "train": (train_x, train_y)}


@pytest.fixture(scope="module")
def trained(splits: dict) -> dict[str, bytes]:
    """One model per preprocessing, trained by the user's own loop."""
    out = {}
    for name, (_, preprocess) in PREPROCESSINGS.items():
        torch.manual_seed(0)
        network = users_network()
        optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
        x, y = splits["train"]
        for _ in range(15):
            for rows in torch.randperm(len(y)).split(64):
                optimizer.zero_grad()
                nn.functional.cross_entropy(network(preprocess(x[rows])), y[rows]).backward()
                optimizer.step()
        out[name] = save(network.state_dict())
    return out


@pytest.mark.parametrize("preprocessing", list(PREPROCESSINGS))
@pytest.mark.parametrize("backend", ["postgres", "embedded"])
def test_the_published_version_scores_what_the_service_reported(
        request: pytest.FixtureRequest, backend: str, preprocessing: str, digits_upload: DigitsUpload,
        splits: dict, trained: dict[str, bytes]) -> None:
    stack: Stack = request.getfixturevalue("stack" if backend == "postgres" else "embedded_stack")
    declared, preprocess = PREPROCESSINGS[preprocessing]
    with stack.client() as client:
        dataset = client.post("/v1/datasets", data={"name": "digits"}, files=digits_upload.files()).json()
        model = client.post("/v1/models", data=digits_upload.model_form(dataset["id"]) | {"preprocessing": declared},
                            files={"weights": ("w.safetensors", trained[preprocessing])}).json()
        model = wait_model(client, model["id"])
        assert model["warnings"] == [], model
        original = client.get(f"/v1/models/{model['id']}/versions").json()["items"][0]["metrics"]

        request_id = submit(client, model["id"], forget={"classes": [FORGET_CLASS]}, config=FAST_JOB,
                            selection="auto")["id"]
        done = wait_for_state(client, request_id, ("succeeded",), timeout=240)
        version = done["selection"]["model_version"]
        reported = client.get(f"/v1/models/{model['id']}/versions").json()["items"][version - 1]
        weights = client.get(f"/v1/models/{model['id']}/versions/{version}/weights").content

    assert reported["preprocessing"] == model["preprocessing"]  # the version carries the model's preprocessing
    measured = {name: user_accuracy(weights, *splits[name], preprocess) for name in ("forget", "retain", "test")}
    for name, value in measured.items():
        assert value == pytest.approx(reported["metrics"][f"{name}_accuracy"], abs=0.02), (name, measured, reported)
    assert original["retain_accuracy"] - measured["retain"] <= 0.03, (original, measured)
    assert measured["forget"] < 0.5  # and the class is in fact forgotten
    shown = {k: round(reported["metrics"][f"{k}_accuracy"], 4) for k in measured}
    print(f"\n[{backend}, {preprocessing}] reported {shown} measured {({k: round(v, 4) for k, v in measured.items()})}"
          f" original retain {original['retain_accuracy']:.4f}")
