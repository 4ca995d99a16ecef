"""The API's RFC 9457 problems as typed exceptions: catch `NotFound`, `Conflict`, ... or `ApiError`."""

from __future__ import annotations

from typing import Any

import httpx


class McuError(Exception):
    """Anything this client raises on purpose."""


class Unreachable(McuError):
    """No answer from the service at all: connection refused, a name that does not resolve, a timeout."""

    def __init__(self, url: str, error: httpx.TransportError) -> None:
        super().__init__(f"no answer from {url} ({type(error).__name__}: {error or 'no detail'})")
        self.url = url


class ApiError(McuError):
    """An error answer of the API (problem+json): `status`, `type`, `title`, `detail`, `errors`."""

    status: int = 0

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        type: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.type, self.errors = status, title, detail, type, errors or []
        self.retry_after: float | None = None  # the server's Retry-After, in seconds, when it sent one


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    status = 410


class PayloadTooLarge(ApiError):
    status = 413


class InvalidInput(ApiError):
    """422: the problem's `errors` name the offending fields or manifest lines."""

    status = 422


class ServiceUnavailable(ApiError):
    """503 (or 507): retry later; `retry_after` is the server's hint in seconds, when given."""

    status = 503


class RateLimited(ApiError):
    """429: this key or address sent too many requests; `retry_after` says when to try again."""

    status = 429


class RequestEnded(McuError):
    """`wait` saw the request end in a state it was not waiting for (failed, cancelled, or succeeded)."""

    def __init__(self, request: Any) -> None:
        error = f": {request.error.detail}" if getattr(request, "error", None) else ""
        super().__init__(f"request {request.id} ended {request.state}{error}")
        self.request = request


_BY_STATUS: dict[int, type[ApiError]] = {
    c.status: c
    for c in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        Gone,
        PayloadTooLarge,
        InvalidInput,
        RateLimited,
        ServiceUnavailable,
    )
}
_BY_STATUS[507] = ServiceUnavailable


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the typed error of a 4xx/5xx answer; the body's problem fields when it is problem+json."""
    if response.status_code < 400:
        return
    response.read()
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": response.text[:500]}
    cls = _BY_STATUS.get(response.status_code, ApiError)
    error = cls(
        response.status_code,
        str(body.get("title", response.reason_phrase)),
        str(body.get("detail", "")),
        str(body.get("type", "about:blank")),
        body.get("errors"),
    )
    if (after := response.headers.get("Retry-After", "")).isdigit():
        error.retry_after = float(after)
    raise error
