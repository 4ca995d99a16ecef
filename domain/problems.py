"""Errors a caller can act on, as RFC 9457 problems: the API renders them, the worker stores them."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://mcu.dev/problems/"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
    507: "Insufficient storage",
}


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


class Problem(Exception):
    """An error with a problem type; `errors` lists offending fields/lines for validation problems."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers
        self.type = problem_type(slug or TITLES.get(status, "error").lower().replace(" ", "-"))
        self.title = title or TITLES.get(status, "Error")

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def invalid(detail: str, errors: list[dict[str, Any]] | None = None) -> Problem:
    return Problem(422, detail, slug="validation", title="Invalid input", errors=errors)


def not_found(kind: str, id_: str) -> Problem:
    return Problem(404, f"{kind} '{id_}' not found")
