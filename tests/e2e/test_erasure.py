"""Erasure beyond the weights over real processes on Postgres, Redis and S3: after a request succeeds, no
object in the bucket and no file in the worker's cache holds the erased images' bytes, and the old
version's weights answer 410."""

from __future__ import annotations

from pathlib import Path

import boto3
import torch
from safetensors.torch import load, save

from cli.digits import DigitsUpload
from tests.support import wait_for, wait_for_state

from .conftest import FAST_JOB, Stack, add_model, submit

ERASED = [f"u{i}" for i in range(5)]


def with_unique_images(upload: DigitsUpload) -> tuple[list[tuple[str, tuple[str, bytes]]], list[bytes]]:
    """The digits plus five train images of random pixels: bytes no other dataset in the bucket holds."""
    tensors = load(upload.shard)
    extra = torch.randint(
        1,
        256,
        (len(ERASED), *tensors["inputs"].shape[1:]),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(15),
    )
    rows = len(tensors["labels"])
    shard = save(
        {
            "inputs": torch.cat([tensors["inputs"], extra]).contiguous(),
            "labels": torch.cat([tensors["labels"], torch.zeros(len(ERASED), dtype=torch.int64)]),
        }
    )
    lines = [f"{sample},train,{upload.SHARD_NAME},{rows + i},subject-{sample}" for i, sample in enumerate(ERASED)]
    manifest = upload.manifest + ("\n".join(lines) + "\n").encode()
    files = [("manifest", ("manifest.csv", manifest)), ("shards", (upload.SHARD_NAME, shard))]
    return files, [image.numpy().tobytes() for image in extra]


def test_erased_images_leave_every_object_and_the_old_weights_answer_410(
    stack: Stack, digits_upload: DigitsUpload
) -> None:
    files, images = with_unique_images(digits_upload)
    bucket = stack.env["MCU_STORAGE_URL"].removeprefix("s3://")
    s3 = boto3.client("s3", endpoint_url=stack.env["MCU_S3_ENDPOINT_URL"])

    def object_bytes(key: str) -> bytes:
        """An object's bytes; none when the worker deleted it since the listing (it runs meanwhile)."""
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return b""

    def file_bytes(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:  # evicted or unlinked since the glob
            return b""

    def holding() -> list[str]:
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])
        ]
        found = [k for k in keys if any(i in object_bytes(k) for i in images)]
        cache = stack.data_dir / "cache"
        return found + [str(p) for p in cache.glob("*") if any(i in file_bytes(p) for i in images)]

    with stack.client() as client:
        dataset = client.post("/v1/datasets", data={"name": "digits and five"}, files=files)
        assert dataset.status_code == 201, dataset.text
        model_id = add_model(client, dataset.json()["id"], digits_upload)
        request = submit(client, model_id, forget={"sample_ids": ERASED}, config=FAST_JOB)
        curve = wait_for_state(client, request["id"], ("awaiting_selection",), timeout=180)["curve"]
        selected = client.post(
            f"/v1/deletion-requests/{request['id']}/selection",
            json={
                "t": curve["recommended_t"],
                "acknowledge": "erasure criterion not met: random images, a storage test",
            },
        )
        assert selected.status_code == 202, selected.text
        assert len(holding()) >= 1  # the uploaded shard (and the worker's cached copy)
        wait_for_state(client, request["id"], ("succeeded",), timeout=180)
        report = wait_for(
            lambda: (
                (r := client.get(f"/v1/deletion-requests/{request['id']}/report").json()["report"])["training_data"][
                    "clean_up_finished_at"
                ]
                and r
            ),
            60,
            "the clean-up of the stored data",
        )
        assert holding() == []
        assert client.get(f"/v1/models/{model_id}/versions/1/weights").status_code == 410
        assert client.get(f"/v1/models/{model_id}/versions/2/weights").status_code == 200
        assert client.get(f"/v1/datasets/{dataset.json()['id']}").json()["num_train"] == len(digits_upload.train_labels)
        again = client.post("/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": ["u0"]}})
        subject = client.post(
            "/v1/deletion-requests", json={"model_id": model_id, "forget": {"subject_ids": ["subject-u1"]}}
        )
    assert report["superseded_versions"][0]["weights"] == "deleted"
    assert (report["training_data"]["erased_from_storage"], report["training_data"]["still_stored"]) == (5, 0)
    assert again.status_code == 409 and again.json()["type"].endswith("/already-erased")
    assert subject.status_code == 409 and request["id"] in subject.json()["detail"]
