"""RFC 9457 problem+json for every error: bad input never becomes a bare 500 or a stack trace."""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.problems import TITLES, Problem, invalid
from storage import ObjectNotFound, ObjectTooLarge, StorageError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(error: Problem) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, media_type=PROBLEM_JSON, headers=error.headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> list[Any]:
    return [part for part in loc if part not in ("body",)] or list(loc)


def insufficient_storage() -> Problem:
    """A full disk (files or database): the request was fine, the service cannot store it."""
    return Problem(507, "the service has no storage left for this request; retry later", headers={"Retry-After": "60"})


def _disk_full(error: Exception) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or Postgres's disk_full (SQLSTATE 53100)."""
    cause = getattr(error, "orig", None)
    return (
        getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or getattr(cause, "sqlstate", None) == "53100"
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _api_error(_: Request, error: Problem) -> JSONResponse:
        return problem_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{"loc": _loc(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in error.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return problem_response(invalid(detail or "invalid request", errors))

    @app.exception_handler(DataError)
    async def _data_error(request: Request, error: DataError) -> JSONResponse:
        # The database refused a value that came from the request (Postgres: a NUL character in text)
        log.info("database rejected a value on %s %s: %s", request.method, request.url.path, error.orig)
        nul = "NUL" in str(error.orig)
        detail = "a value in the request cannot be stored" + (
            ": text must not contain NUL (0x00) characters" if nul else ""
        )
        return problem_response(invalid(detail, [{"loc": [], "msg": "NUL character" if nul else "invalid value"}]))

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(OperationalError)
    async def _database_busy(request: Request, error: Exception) -> JSONResponse:
        if _disk_full(error):
            log.error("the database's disk is full on %s %s", request.method, request.url.path)
            return problem_response(insufficient_storage())
        # No free connection in time, a SQLite write lock not granted, or the database unreachable: the
        # request can be retried as it is, so say when instead of hanging or answering 500.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(error).__name__)
        return problem_response(
            Problem(503, "the database is busy or unavailable: retry shortly", headers={"Retry-After": "2"})
        )

    @app.exception_handler(StorageError)
    async def _storage(request: Request, error: StorageError) -> JSONResponse:
        if isinstance(error, ObjectTooLarge):
            return problem_response(Problem(413, str(error)))
        if isinstance(error, ObjectNotFound):  # a row names an object the store lacks: ours to mend, not a retry
            log.error("stored object %s missing on %s %s", error.key, request.method, request.url.path)
            missing = "a stored object of this resource is missing; it has been logged"
            return problem_response(
                Problem(500, missing, slug="artifact-missing", title="A stored artifact is missing")
            )
        # Unreachable or failing after the client's own retries: the request was fine and can be sent again.
        log.warning("object store unavailable on %s %s: %s", request.method, request.url.path, error)
        return problem_response(
            Problem(503, "the object store is unavailable: retry shortly", headers={"Retry-After": "5"})
        )

    @app.exception_handler(OSError)
    async def _os_error(request: Request, error: OSError) -> JSONResponse:
        if error.errno == errno.ENOSPC:  # a full disk: the request was fine, the service cannot store it
            log.error("no space left on device on %s %s", request.method, request.url.path)
            return problem_response(insufficient_storage())
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal error; it has been logged"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail if isinstance(error.detail, str) else TITLES.get(error.status_code, "error")
        return problem_response(Problem(error.status_code, detail, headers=getattr(error, "headers", None)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal error; it has been logged"))
