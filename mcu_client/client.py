"""`Client`: every endpoint of the API as a typed method, over httpx.

    with Client("http://127.0.0.1:8000", api_key) as mcu:     # or Client() with MCU_URL / MCU_API_KEY set
        request = mcu.create_request(model_id, forget={"classes": [3]})
        request = mcu.wait(request.id, until="awaiting_selection", on_progress=print)
        mcu.select(request.id, request.curve.recommended_t)

Errors are raised as the typed exceptions of `mcu_client.errors`; lists are iterators over every page.
`wait_for` is the one polling loop of the project: `wait`, `wait_model`, the CLI, the demo, the tests and
the benchmarks all wait through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel

from mcu_client.errors import (
    McuError,
    RateLimited,
    RequestEnded,
    ServiceUnavailable,
    Unreachable,
    raise_for_problem,
)
from mcu_client.evidence import Verification, verify_report
from mcu_client.types import (
    BulkResult,
    Curve,
    Dataset,
    DeletionRequest,
    DeletionRequestDetail,
    Erasure,
    Event,
    Identity,
    Meta,
    Model,
    PointAttack,
    PointAttacks,
    SigningKeys,
    Version,
)

DEFAULT_URL = "http://127.0.0.1:8000"
B = TypeVar("B", bound=BaseModel)
V = TypeVar("V")
# An upload: raw bytes, a path, or an open binary file.
FileInput = bytes | str | os.PathLike[str] | IO[bytes]


def wait_for(condition: Callable[[], V | None], timeout: float | None, what: str, interval: float = 0.1) -> V:
    """The first truthy value of `condition()`, polled every `interval` seconds; TimeoutError naming `what`
    after `timeout` seconds (None: no limit)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Client:
    """The MCU service's HTTP API. `http` wraps an existing authenticated httpx.Client instead."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        if http is None:
            api_key = api_key or os.environ.get("MCU_API_KEY")
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            http = httpx.Client(
                base_url=url or os.environ.get("MCU_URL") or DEFAULT_URL, headers=headers, timeout=timeout
            )
            self._owns_http = True
        else:
            self._owns_http = False
        self.http = http

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __repr__(self) -> str:  # never the key
        return f"Client({str(self.http.base_url)!r})"

    # --- plumbing ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _answered(self) -> Iterator[None]:
        """httpx's transport errors as `Unreachable`: the caller learns the address got no answer, in one line."""
        try:
            yield
        except httpx.TransportError as error:
            raise Unreachable(str(self.http.base_url), error) from error

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._answered():
            response = self.http.request(method, path, **kwargs)
        raise_for_problem(response)
        return response

    def _get(self, cls: type[B], path: str, **params: Any) -> B:
        return cls.model_validate(self._call("GET", path, params=_clean(params)).json())

    def _post(self, cls: type[B], path: str, idempotency_key: str | None = None, **kwargs: Any) -> B:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cls.model_validate(self._call("POST", path, headers=headers, **kwargs).json())

    def _pages(self, cls: type[B], path: str, page_size: int = 100, **params: Any) -> Iterator[B]:
        """Every item of a paginated list, fetching the next page as the caller iterates."""
        token = None
        while True:
            body = self._call("GET", path, params=_clean(params | {"page_size": page_size, "page_token": token}))
            page = body.json()
            yield from (cls.model_validate(item) for item in page["items"])
            token = page["next_page_token"]
            if not token:
                return

    # --- health and identity -------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when the API, its database, broker and object store answer (GET /readyz)."""
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def whoami(self) -> Identity:
        """The calling key's name and scopes."""
        return self._get(Identity, "/v1/keys/me")

    def meta(self) -> Meta:
        """The server's request states, their transitions and final states, and the base methods it offers with
        their settings (GET /v1/meta, scope requests:read): read them here rather than from a copy."""
        return self._get(Meta, "/v1/meta")

    # --- datasets ------------------------------------------------------------------------------------

    def create_dataset(
        self,
        name: str,
        manifest: FileInput,
        shards: Sequence[FileInput | tuple[str, FileInput]],
        *,
        description: str | None = None,
        num_classes: int | None = None,
        idempotency_key: str | None = None,
    ) -> Dataset:
        """Register shards (safetensors with `inputs` and `labels`) and their manifest CSV. A shard given as
        raw bytes or a file needs its name: `(name, content)`. Files are streamed from disk."""
        with contextlib.ExitStack() as stack:
            files = [("manifest", _upload(stack, manifest, "manifest.csv"))]
            files += [
                ("shards", _upload(stack, s[1], s[0]) if isinstance(s, tuple) else _upload(stack, s)) for s in shards
            ]
            data = _clean({"name": name, "description": description, "num_classes": num_classes})
            return self._post(Dataset, "/v1/datasets", idempotency_key, data=data, files=files)

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._get(Dataset, f"/v1/datasets/{dataset_id}")

    def datasets(self, page_size: int = 100) -> Iterator[Dataset]:
        return self._pages(Dataset, "/v1/datasets", page_size)

    # --- models --------------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        architecture: str,
        num_classes: int,
        dataset_id: str,
        weights: FileInput,
        preprocessing: str | dict[str, list[float]],
        *,
        architecture_kwargs: dict[str, Any] | None = None,
        input_transform: str | dict[str, Any] | None = None,
        augmentation: str | Sequence[str] | None = None,
        require_approval: bool = False,
        idempotency_key: str | None = None,
    ) -> Model:
        """Register a trained classifier (state `validating` until a worker has loaded it: see `wait_model`).
        `input_transform`: {"resize": int | [h, w], "center_crop": int | [h, w]}, applied before the preprocessing
        wherever the model sees data; `augmentation`: "none", "crop_flip" or a list of steps, training only;
        `require_approval`: its deletion requests wait for another key's `approve` (see `update_model`)."""
        data = {
            "name": name,
            "architecture": architecture,
            "num_classes": num_classes,
            "dataset_id": dataset_id,
            "preprocessing": preprocessing if isinstance(preprocessing, str) else json.dumps(preprocessing),
            "architecture_kwargs": json.dumps(architecture_kwargs) if architecture_kwargs else None,
            "input_transform": input_transform
            if input_transform is None or isinstance(input_transform, str)
            else json.dumps(input_transform),
            "augmentation": augmentation
            if augmentation is None or isinstance(augmentation, str)
            else json.dumps(list(augmentation)),
            "require_approval": "true" if require_approval else None,
        }
        with contextlib.ExitStack() as stack:
            return self._post(
                Model,
                "/v1/models",
                idempotency_key,
                data=_clean(data),
                files={"weights": _upload(stack, weights, "weights.safetensors")},
            )

    def get_model(self, model_id: str) -> Model:
        return self._get(Model, f"/v1/models/{model_id}")

    def update_model(self, model_id: str, *, require_approval: bool) -> Model:
        """Whether the model's deletion requests wait for approval from now on (a key with requests:approve)."""
        return Model.model_validate(
            self._call("PATCH", f"/v1/models/{model_id}", json={"require_approval": require_approval}).json()
        )

    def delete_model(self, model_id: str) -> None:
        """Delete a model that failed validation (state `invalid`) and its stored weights. A ready model is a
        Conflict (its versions and evidence stay), as is one still being validated; an unknown one NotFound."""
        self._call("DELETE", f"/v1/models/{model_id}")

    def models(self, page_size: int = 100) -> Iterator[Model]:
        return self._pages(Model, "/v1/models", page_size)

    def versions(self, model_id: str, page_size: int = 100) -> Iterator[Version]:
        """The model's versions, oldest first."""
        return self._pages(Version, f"/v1/models/{model_id}/versions", page_size)

    def download_weights(
        self,
        model_id: str,
        version: int,
        destination: str | os.PathLike[str] | IO[bytes],
        on_bytes: Callable[[int, int | None], None] | None = None,
    ) -> str:
        """Stream a version's safetensors to `destination`; returns its sha256, checked against the ETag.
        `on_bytes(done, total)` reports progress."""
        with contextlib.ExitStack() as stack:
            out = destination if hasattr(destination, "write") else stack.enter_context(Path(destination).open("wb"))
            with (
                self._answered(),
                self.http.stream("GET", f"/v1/models/{model_id}/versions/{version}/weights") as response,
            ):
                raise_for_problem(response)
                total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
                digest, done = hashlib.sha256(), 0
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if on_bytes:
                        on_bytes(done, total)
                expected = response.headers.get("ETag", "").strip('"')
        if expected and digest.hexdigest() != expected:
            raise McuError(f"downloaded weights have sha256 {digest.hexdigest()}, the server says {expected}")
        return digest.hexdigest()

    def wait_model(self, model_id: str, timeout: float | None = None, interval: float = 0.2) -> Model:
        """The model once workers validated it; McuError with the reason when it is `invalid`. By default it
        waits for as long as the model is `validating`: a model that cannot run (a misspelled architecture,
        weights of another model) is `invalid` within seconds, but the accuracy of one that can is measured
        by a GPU worker, after the jobs ahead of it. With `timeout` (seconds): TimeoutError after that."""
        try:
            model = wait_for(
                lambda: m if (m := self.get_model(model_id)).state != "validating" else None,
                timeout,
                f"model {model_id} to be validated",
                interval,
            )
        except TimeoutError:
            raise TimeoutError(
                f"model {model_id} is still validating after {timeout:g} s: a worker's check ends a model that "
                "cannot run within seconds; one that can waits for a GPU worker to measure its accuracy after the "
                "jobs ahead of it (or for a worker to start). Wait longer: timeout=None waits for the verdict"
            ) from None
        if model.state != "ready":
            raise McuError(f"model {model_id} is {model.state}: {model.error.detail if model.error else ''}")
        return model

    # --- deletion requests ---------------------------------------------------------------------------

    def create_request(
        self,
        model_id: str,
        forget: dict[str, list[Any]],
        *,
        base_method: str | None = None,
        config: dict[str, Any] | None = None,
        selection: str | None = None,
        external_id: str | None = None,
        callback_url: str | None = None,
        received_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> DeletionRequest:
        """Submit a deletion request; `forget`: {"sample_ids": [...]}, {"subject_ids": [...]} or {"classes": [...]}.
        `received_at`: when the data subject asked (default now); the deadline `due_at` counts from it."""
        body = _clean(
            {
                "model_id": model_id,
                "forget": forget,
                "base_method": base_method,
                "config": config,
                "selection": selection,
                "external_id": external_id,
                "callback_url": callback_url,
                "received_at": received_at.isoformat() if received_at else None,
            }
        )
        return self._post(DeletionRequest, "/v1/deletion-requests", idempotency_key, json=body)

    def get_request(self, request_id: str) -> DeletionRequestDetail:
        """The request with its job's timings, last heartbeat and training statistics."""
        return self._get(DeletionRequestDetail, f"/v1/deletion-requests/{request_id}")

    def requests(
        self, *, model_id: str | None = None, state: str | None = None, page_size: int = 100, **filters: Any
    ) -> Iterator[DeletionRequest]:
        """Requests, newest first; further server filters (e.g. overdue=True) pass through as query parameters."""
        return self._pages(
            DeletionRequest, "/v1/deletion-requests", page_size, model_id=model_id, state=state, **filters
        )

    def curve(self, request_id: str) -> Curve:
        """The measured curve (Conflict while the request has none yet)."""
        return self._get(Curve, f"/v1/deletion-requests/{request_id}/curve")

    def select(self, request_id: str, t: float, acknowledge: str | None = None) -> DeletionRequest:
        """Choose the point at `t`: the worker publishes it as the model's next version. A point that fails the
        erasure criterion is a Conflict unless `acknowledge` begins with "erasure criterion not met"."""
        return self._post(
            DeletionRequest,
            f"/v1/deletion-requests/{request_id}/selection",
            json=_clean({"t": t, "acknowledge": acknowledge}),
        )

    def attack(self, request_id: str, t: float) -> PointAttack:
        """File the auditor's attacks on φ(t) before choosing it (or read those filed already); a worker runs
        them. Conflict unless the request awaits selection."""
        return self._post(PointAttack, f"/v1/deletion-requests/{request_id}/attacks", json={"t": t})

    def attacks(self, request_id: str) -> list[PointAttack]:
        """The points attacked so far, by t."""
        return self._get(PointAttacks, f"/v1/deletion-requests/{request_id}/attacks").items

    def extend(self, request_id: str, days: int, reason: str) -> DeletionRequest:
        """Move the deadline once, by at most 60 days, with the reason kept."""
        return self._post(
            DeletionRequest, f"/v1/deletion-requests/{request_id}/extension", json={"days": days, "reason": reason}
        )

    def approve(self, request_id: str, reason: str) -> DeletionRequest:
        """Let a request awaiting approval run (→ queued), with the reason kept; needs `requests:approve` on a key
        other than the one that submitted it (Forbidden otherwise; Conflict unless it awaits approval)."""
        return self._decide(request_id, "approve", reason)

    def deny(self, request_id: str, reason: str) -> DeletionRequest:
        """Refuse a request awaiting approval (→ cancelled: nothing runs), with the reason kept."""
        return self._decide(request_id, "deny", reason)

    def _decide(self, request_id: str, decision: str, reason: str) -> DeletionRequest:
        return self._post(
            DeletionRequest,
            f"/v1/deletion-requests/{request_id}/approval",
            json={"decision": decision, "reason": reason},
        )

    def report(self, request_id: str) -> dict[str, Any]:
        """The signed proof-of-erasure report of a succeeded request: {"report": ..., "signature": ...}."""
        return self._call("GET", f"/v1/deletion-requests/{request_id}/report").json()

    def report_html(self, request_id: str) -> str:
        return self._call("GET", f"/v1/deletion-requests/{request_id}/report", params={"format": "html"}).text

    def signing_keys(self) -> SigningKeys:
        """The public keys that verify reports (current and retired)."""
        return self._get(SigningKeys, "/v1/signing-key")

    def verify_report(self, document: dict[str, Any]) -> Verification:
        """`mcu_client.verify_report` with the keys this service publishes (GET /v1/signing-key): trusts the
        service at this client's URL. Offline, pass keys saved earlier to `mcu_client.verify_report` instead."""
        return verify_report(document, self.signing_keys())

    def cancel(self, request_id: str) -> DeletionRequest:
        return self._post(DeletionRequest, f"/v1/deletion-requests/{request_id}/cancel")

    def events(self, request_id: str, page_size: int = 500) -> Iterator[Event]:
        """The request's audit trail, oldest first."""
        return self._pages(Event, f"/v1/deletion-requests/{request_id}/events", page_size)

    # --- subject-wide erasures ----------------------------------------------------------------------

    def create_erasure(
        self,
        *,
        subject_ids: Sequence[str] | None = None,
        sample_ids: Sequence[str] | None = None,
        external_id: str | None = None,
        base_method: str | None = None,
        config: dict[str, Any] | None = None,
        selection: str | None = None,
        callback_url: str | None = None,
        received_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Erasure:
        """Erase subjects (or samples) from every model whose training data holds them: one deletion request per
        model, each with these options, and one aggregate state. The same `external_id` again returns that
        erasure instead of making another."""
        body = _erasure_body(
            {
                "subject_ids": subject_ids,
                "sample_ids": sample_ids,
                "external_id": external_id,
                "base_method": base_method,
                "config": config,
                "selection": selection,
                "callback_url": callback_url,
                "received_at": received_at,
            }
        )
        return self._post(Erasure, "/v1/erasures", idempotency_key, json=body)

    def get_erasure(self, erasure_id: str) -> Erasure:
        return self._get(Erasure, f"/v1/erasures/{erasure_id}")

    def erasures(self, *, external_id: str | None = None, page_size: int = 100) -> Iterator[Erasure]:
        """Erasures, newest first (`external_id`: the one of that reference)."""
        return self._pages(Erasure, "/v1/erasures", page_size, external_id=external_id)

    def bulk_erasures(self, items: Sequence[dict[str, Any]]) -> list[BulkResult]:
        """Many erasures, each a dict of `create_erasure`'s fields with a required `external_id` that makes it
        idempotent (send the same items again after a failure: nothing is made twice). Sent in calls of at most
        BULK_LIMIT items; one result per item, in order, `index` counting across the calls."""
        results: list[BulkResult] = []
        for start in range(0, len(items), BULK_LIMIT):
            chunk = [_erasure_body(dict(item)) for item in items[start : start + BULK_LIMIT]]
            answer = self._call("POST", "/v1/erasures/bulk", json={"items": chunk}).json()
            for item in answer["items"]:
                results.append(BulkResult.model_validate(item | {"index": start + item["index"]}))
        return results

    def erasure_report(self, erasure_id: str) -> dict[str, Any]:
        """One signed report over the erasure and each of its requests' reports (Conflict until all succeeded);
        check it like any report, with `verify_report`."""
        return self._call("GET", f"/v1/erasures/{erasure_id}/report").json()

    def wait(
        self,
        request_id: str,
        until: str | Sequence[str] = ("awaiting_selection",),
        *,
        timeout: float | None = None,
        interval: float = 0.5,
        on_progress: Callable[[DeletionRequest], None] | None = None,
    ) -> DeletionRequestDetail:
        """Poll the request until its state is one of `until`; `on_progress` sees every answer. Raises
        RequestEnded when it finishes in another state (e.g. `failed`) and TimeoutError after `timeout`
        seconds (None: no limit). A 503, a 429 or a dropped connection is waited out, not raised."""
        wanted = (until,) if isinstance(until, str) else tuple(until)
        terminal: frozenset[str] = frozenset()  # the server's final states (GET /v1/meta), read once

        def reached() -> DeletionRequestDetail | None:
            nonlocal terminal
            try:
                terminal = terminal or frozenset(self.meta().terminal_states)
                request = self.get_request(request_id)
            except (ServiceUnavailable, RateLimited, Unreachable):
                return None
            if on_progress:
                on_progress(request)
            if request.state in wanted:
                return request
            if request.state in terminal:
                raise RequestEnded(request)
            return None

        return wait_for(reached, timeout, f"request {request_id} to reach {', '.join(wanted)}", interval)


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


BULK_LIMIT = 1_000  # items per POST /v1/erasures/bulk


def _erasure_body(fields: dict[str, Any]) -> dict[str, Any]:
    """An erasure's JSON: unset fields left out, id sequences as lists, a datetime `received_at` in RFC 3339."""
    body = _clean(fields)
    for kind in ("subject_ids", "sample_ids"):
        if kind in body:
            body[kind] = list(body[kind])
    if isinstance(body.get("received_at"), datetime):
        body["received_at"] = body["received_at"].isoformat()
    return body


def _upload(stack: contextlib.ExitStack, content: FileInput, name: str | None = None) -> tuple[str, Any]:
    """(file name, body) for a multipart part; a path is opened (and streamed) under `stack`."""
    if isinstance(content, bytes):
        return name or "upload", content
    if isinstance(content, str | os.PathLike):
        path = Path(content)
        return name or path.name, stack.enter_context(path.open("rb"))
    return name or Path(getattr(content, "name", "upload")).name, content
