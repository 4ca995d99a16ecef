"""`mcu models upload` declares a model's input transform and augmentation (docs/inputs.md), shows them, and
passes the service's 422 on for a bad one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli.digits import DigitsUpload

from .conftest import Stack
from .test_cli_client import mcu


def test_models_upload_declares_the_input_transform_and_augmentation(
    embedded_stack: Stack, digits_upload: DigitsUpload, tmp_path: Path
) -> None:
    with embedded_stack.client() as client:
        dataset = client.post("/v1/datasets", data={"name": "digits"}, files=digits_upload.files()).json()
    (tmp_path / "w.safetensors").write_bytes(digits_upload.weights)  # cnn-small pools adaptively: any size fits
    upload = (
        "models",
        "upload",
        str(tmp_path / "w.safetensors"),
        "--name",
        "digits-16",
        "--architecture",
        "cnn-small",
        "--num-classes",
        "10",
        "--dataset",
        dataset["id"],
        "--preprocessing",
        "unit",
    )
    model = json.loads(
        mcu(
            embedded_stack, *upload, "--input-transform", '{"resize": 16}', "--augmentation", "crop_flip", "--json"
        ).stdout
    )
    assert model["state"] == "ready", model["error"]
    assert (model["input_transform"], model["augmentation"]) == ({"resize": 16}, ["random_crop", "horizontal_flip"])
    shown = mcu(embedded_stack, "models", "show", model["id"]).stdout
    assert "input transform {'resize': 16}; augmentation (training only) random_crop, horizontal_flip" in shown

    env = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")} | {
        "MCU_URL": embedded_stack.url,
        "MCU_API_KEY": embedded_stack.key,
        "COLUMNS": "200",
    }
    refused = subprocess.run(
        [sys.executable, "-m", "cli", *upload, "--augmentation", '["random_crop", "cutmix"]'],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0 and "augmentation" in refused.stderr + refused.stdout, refused
