"""`mcu`'s client verbs as real subprocesses against the embedded service: an image folder uploaded as a
dataset, a model, a request followed live with `watch`, its curve, a selection, the new version's weights."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cli.digits import DigitsUpload
from unlearning import load_digits_dataset

from .conftest import FAST_JOB, Stack


def mcu(stack: Stack, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")} | {
        "MCU_URL": stack.url,
        "MCU_API_KEY": stack.key,
        "COLUMNS": "150",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, timeout=300, check=False, cwd=cwd
    )
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    assert stack.key not in done.stdout + done.stderr
    return done


def digits_folder(root: Path) -> int:
    """sklearn's digits as train/<digit>/<i>.png and test/<digit>/<i>.png; returns the number of images."""
    digits = load_digits_dataset()
    for split, inputs, labels in (
        ("train", digits.train_inputs, digits.train_labels),
        ("test", digits.test_inputs, digits.test_labels),
    ):
        for i, (image, label) in enumerate(zip(inputs.numpy(), labels.tolist(), strict=True)):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(image[0]), "L").save(folder / f"{i:04d}.png")
    return len(digits.train_labels) + len(digits.test_labels)


def test_cli_uploads_a_folder_watches_a_request_and_selects_a_point(
    embedded_stack: Stack, digits_upload: DigitsUpload, tmp_path: Path
) -> None:
    stack = embedded_stack
    count = digits_folder(tmp_path / "digits")
    alice = [
        min((tmp_path / "digits" / "train" / digit).iterdir()).relative_to(tmp_path / "digits").as_posix()
        for digit in ("3", "5")
    ]
    (tmp_path / "subjects.csv").write_text("sample_id,subject_id\n" + "".join(f"{s},alice\n" for s in alice))
    uploaded = mcu(
        stack,
        "datasets",
        "upload",
        str(tmp_path / "digits"),
        "--subjects",
        str(tmp_path / "subjects.csv"),
        "--max-shard-mb",
        "1",
        "--size",
        "8x8",
        "--json",
    )  # decoded into pixels: no input transform
    dataset = json.loads(uploaded.stdout)
    assert dataset["num_train"] + dataset["num_test"] == count and dataset["num_classes"] == 10
    assert dataset["input_shape"] == [1, 8, 8] and dataset["description"].startswith("classes: 0=0, 1=1")

    (tmp_path / "w.safetensors").write_bytes(digits_upload.weights)  # trained on these very images
    model = json.loads(
        mcu(
            stack,
            "models",
            "upload",
            str(tmp_path / "w.safetensors"),
            "--name",
            "digits-cnn",
            "--architecture",
            "cnn-small",
            "--num-classes",
            "10",
            "--dataset",
            dataset["id"],
            "--preprocessing",
            "unit",
            "--json",
        ).stdout
    )
    assert model["state"] == "ready"
    shown = mcu(stack, "models", "show", model["id"]).stdout
    assert "state ready" in shown and "current version 1" in shown

    by_subject = json.loads(
        mcu(stack, "requests", "create", "--model", model["id"], "--subjects", "alice", "--json").stdout
    )
    assert by_subject["forget_count"] == 2  # the CSV's two sample ids are the images' relative paths
    mcu(stack, "requests", "cancel", by_subject["id"], "--yes")
    request = json.loads(
        mcu(
            stack,
            "requests",
            "create",
            "--model",
            model["id"],
            "--classes",
            "3",
            "--config",
            json.dumps(FAST_JOB),
            "--external-id",
            "CLI-1",
            "--json",
        ).stdout
    )

    watched = mcu(stack, "requests", "watch", request["id"])
    assert "awaiting_selection" in watched.stdout and "curve: 5 points" in watched.stdout
    curve = mcu(stack, "requests", "curve", request["id"]).stdout
    assert "← recommended" in curve and "recommended t = " in curve and "t=1" in curve
    assert len(json.loads(mcu(stack, "requests", "curve", request["id"], "--json").stdout)["points"]) == 5

    selected = mcu(stack, "requests", "select", request["id"], "--recommended", "--watch").stdout
    assert "succeeded" in selected and "-> version 2" in selected
    listed = json.loads(mcu(stack, "requests", "list", "--model", model["id"], "--json").stdout)
    assert [r["state"] for r in listed] == ["succeeded", "cancelled"]
    versions = json.loads(mcu(stack, "models", "versions", model["id"], "--json").stdout)
    assert [(v["version"], v["parent_version"], v["deletion_request_id"]) for v in versions] == [
        (1, None, None),
        (2, 1, request["id"]),
    ]
    downloaded = mcu(stack, "models", "download", model["id"], "-o", str(tmp_path / "v2.safetensors")).stdout
    sha256 = hashlib.sha256((tmp_path / "v2.safetensors").read_bytes()).hexdigest()
    assert sha256 == versions[1]["sha256"] and sha256 in downloaded

    # The evidence: the signed report, checked offline against the service's published keys.
    mcu(stack, "requests", "report", request["id"], "-o", str(tmp_path / "report.json"))
    (tmp_path / "keys.json").write_bytes(httpx.get(f"{stack.url}/v1/signing-key").content)
    report = json.loads((tmp_path / "report.json").read_text())["report"]
    assert report["model"]["after"]["sha256"] == sha256 and report["request"]["external_id"] == "CLI-1"
    checked = mcu(
        stack, "reports", "verify", str(tmp_path / "report.json"), "--public-key", str(tmp_path / "keys.json")
    ).stdout
    assert checked.startswith("VALID")

    missing = subprocess.run(
        [sys.executable, "-m", "cli", "requests", "show", "req_nope"],
        capture_output=True,
        text=True,
        env={**os.environ, "MCU_URL": stack.url, "MCU_API_KEY": stack.key},
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1 and "404" in missing.stderr and "Traceback" not in missing.stderr
