"""The OpenAPI document, completed with what FastAPI cannot infer: every error is RFC 9457 problem+json,
and the forget selector takes exactly one of its three keys."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.errors import PROBLEM_JSON
from api.schemas import ProblemOut
from domain.problems import TITLES


class ProblemBody(ProblemOut):
    """An error: RFC 9457 problem details; `errors` names the offending fields or lines."""

    status: int


API_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 503)
FORGET_ONE_OF = [{"required": ["sample_ids"]}, {"required": ["subject_ids"]}, {"required": ["classes"]}]


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = ProblemBody.model_json_schema()
            for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, replaced by Problem
                schemas.pop(name, None)
            if "ForgetIn" in schemas:
                schemas["ForgetIn"]["oneOf"] = FORGET_ONE_OF
            problem = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for path, operations in schema["paths"].items():
                codes = API_ERRORS if path.startswith("/v1/") else (503,) if path == "/readyz" else ()
                for operation in operations.values():
                    for code in codes:
                        operation["responses"][str(code)] = {"description": TITLES[code]} | problem
                    for code, response in operation["responses"].items():  # a route's own errors, e.g. 410
                        if code.isdigit() and int(code) >= 400:
                            response |= problem
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
