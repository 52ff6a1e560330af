"""The OpenAPI document, adjusted where FastAPI cannot say what the server does.

``Idempotency-Key`` is declared by the ``get_idempotency_key`` dependency as an optional
header so that its absence is our 400 ``idempotency_key_required`` (not FastAPI's 422); the
server refuses every request without it, so the document marks it required.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _mark_required_headers(spec: dict[str, Any]) -> dict[str, Any]:
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "header" and parameter.get("name") == IDEMPOTENCY_HEADER:
                    parameter["required"] = True
                    schema = parameter.get("schema", {})
                    # The dependency's ``str | None`` renders as anyOf [string, null].
                    for option in schema.pop("anyOf", []):
                        if option.get("type") == "string":
                            schema.update(option)
                    schema.update({"type": "string", "minLength": 1, "maxLength": 255})
                    schema.setdefault("pattern", "^[\\x20-\\x7e]+$")
    return spec


def install_openapi(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _mark_required_headers(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
