"""Every error leaves as RFC 9457 problem+json; the OpenAPI document says so per route."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import errors
from app.errors import PROBLEM_JSON, Problem

log = logging.getLogger(__name__)

_DESCRIPTIONS = {
    400: "Malformed request (bad JSON, missing Idempotency-Key, bad cursor)",
    401: "Missing or invalid bearer token",
    403: "Not allowed (admin role, read-only account)",
    404: "Not found, or owned by another user",
    409: "Conflict (request in progress, connection broken, order not modifiable)",
    413: "Request body too large",
    415: "Request body is not JSON",
    422: "Validation failed or the broker refused",
    429: "Rate limited (see Retry-After)",
    503: "Broker unavailable or live trading switched off",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def problem_response(error: errors.AppError) -> JSONResponse:
    return JSONResponse(
        error.to_problem(), status_code=error.status, media_type=PROBLEM_JSON, headers=error.headers
    )


def _validation_problem(exc: RequestValidationError) -> errors.AppError:
    details = exc.errors()
    if any(d.get("type") == "json_invalid" for d in details):
        return errors.MalformedJson("the request body is not valid JSON")
    fields = []
    for d in details:
        loc = [str(p) for p in d.get("loc", ()) if p != "body"]
        fields.append({"field": ".".join(loc) or "body", "message": str(d.get("msg", "invalid"))})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    # An order body's own checks (options, legs) raise errors typed with a stable code of
    # their own: the first of them names the problem, every error is still listed.
    coded = next(
        (
            errors.ORDER_VALIDATION_CODES[str(d["type"])]
            for d in details
            if str(d.get("type")) in errors.ORDER_VALIDATION_CODES
        ),
        errors.ValidationFailed,
    )
    return coded(summary or "the request is not valid", extra={"errors": fields})


def allowed_methods(request: Request) -> list[str]:
    """Every method some operation serves at this path, from the OpenAPI document (each
    method of a path is its own route here, and Starlette's 405 names only the first)."""
    table: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            methods = frozenset(m.upper() for m in operations if m.upper() in _METHODS)
            table.append((re.compile(f"^{regex}$"), methods))
        request.app.state.allowed_methods = table
    path = request.url.path
    allowed: set[str] = set()
    for compiled, methods in table:
        if compiled.match(path):
            allowed |= methods
    return sorted(allowed)


_METHODS = frozenset({"GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def install_error_handlers(app: FastAPI) -> None:
    async def app_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.AppError)
        return problem_response(exc)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_validation_problem(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        mapped: errors.AppError
        if exc.status_code == 404:
            mapped = errors.NotFound("no such route")
        elif exc.status_code == 405:
            headers = dict(exc.headers or {})
            headers["Allow"] = ", ".join(allowed_methods(request))
            mapped = errors.MethodNotAllowed(headers=headers)
        else:
            mapped = errors.BadRequest(str(exc.detail))
        return problem_response(mapped)

    async def pool_exhausted(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("no database connection free in time: answering 503 overloaded")
        return problem_response(
            errors.Overloaded("no database connection became free in time; retry shortly")
        )

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(errors.AppError("an unexpected error occurred"))

    app.add_exception_handler(errors.AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(PoolTimeout, pool_exhausted)
    app.add_exception_handler(Exception, unexpected)
