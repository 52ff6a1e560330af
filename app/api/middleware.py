"""Pure ASGI middleware: request id, access metrics, the request body size limit, and the
WebSocket origin check."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from urllib.parse import parse_qsl

from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors
from app.api.problems import problem_response
from app.observability import HTTP_LATENCY, HTTP_REQUESTS, request_id_var

log = logging.getLogger(__name__)

_VALID_REQUEST_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class RequestContextMiddleware:
    """Tags every request with an id (echoed in ``X-Request-ID``) and records its metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming
            if incoming and len(incoming) <= 64 and set(incoming) <= _VALID_REQUEST_ID
            else uuid.uuid4().hex
        )
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}

        response_started = {"value": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_started["value"] = True
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Answered here, not by Starlette's outermost handler, so the 500 carries the
            # request id and is logged with it. After the response started, nothing can be
            # sent: the error propagates and the server closes the connection.
            if response_started["value"]:
                raise
            problem = database_refusal(exc)
            if problem is None:
                log.exception("unhandled error")
                problem = errors.AppError("an unexpected error occurred")
            response = problem_response(problem)
            await response(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(method, template, str(status_holder["status"])).inc()
            HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - started)
            request_id_var.reset(token)


# Postgres refuses text it cannot store: a NUL character (22021, "invalid byte sequence
# for encoding UTF8: 0x00") or one the encoding lacks (22P05). That is the client's input,
# not a server fault: 422, like SQLite (which stores it and finds nothing) in effect.
_TEXT_REFUSED = frozenset({"22021", "22P05"})


def database_refusal(exc: BaseException) -> errors.AppError | None:
    """The client-facing error for a database refusal caused by the request's text."""
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in _TEXT_REFUSED:
        return errors.ValidationFailed("text values may not contain NUL characters")
    return None


class NulByteMiddleware:
    """A NUL in the path or the query string is refused before any route sees it.

    No id, slug or parameter value of this API contains one; Postgres cannot even compare
    against such text (it raises instead of finding nothing). A path with a NUL names no
    resource (404); a query parameter with one is invalid (422).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem: errors.AppError | None = None
            if "\x00" in scope["path"]:
                problem = errors.NotFound("no such resource")
            else:
                query = scope.get("query_string", b"").decode("latin-1")
                if "%00" in query or "\x00" in query:
                    pairs = parse_qsl(query, keep_blank_values=True)
                    if any("\x00" in k or "\x00" in v for k, v in pairs):
                        problem = errors.ValidationFailed(
                            "query parameters may not contain NUL characters"
                        )
            if problem is not None:
                await problem_response(problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit with 413 problem+json before the app parses them, and
    bodies that stop arriving with 408."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                # A client that stops sending its body holds the connection and a task:
                # each read gets ``read_timeout`` (http_body_timeout_seconds).
                async with asyncio.timeout(self.read_timeout):
                    message = await receive()
            except TimeoutError:
                await problem_response(
                    errors.RequestTimeout(
                        f"no part of the request body arrived for {self.read_timeout:g} s",
                        headers={"Connection": "close"},
                    )
                )(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if body and b"\x00" in body[:4] and _is_json(scope):
            # JSON is exchanged in UTF-8 (RFC 8259 section 8.1); Python's parser would also
            # guess UTF-16/32 from the NUL bytes of the first characters.
            await problem_response(
                errors.MalformedJson("JSON request bodies must be encoded in UTF-8")
            )(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            errors.PayloadTooLarge(f"request bodies are limited to {self.max_bytes} bytes")
        )
        await response(scope, receive, send)


class WebSocketOriginMiddleware:
    """Refuse WebSocket upgrades from a browser origin that is not on the CORS allow-list.

    CORS does not apply to WebSockets: a page on any origin may open one, and the browser
    sends the user's cookies with it. The handshake is refused (HTTP 403, before ``accept``)
    when its ``Origin`` is not on the list. A handshake without ``Origin`` is allowed:
    browsers always send one, so it comes from a non-browser client (a server, a script),
    which CORS never constrained and which authenticates with its token like any other.
    """

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            origin = _header(scope, b"origin")
            if origin is not None and origin not in self.origins:
                log.info("websocket upgrade refused: origin not allowed", extra={"origin": origin})
                await send({"type": "websocket.close", "code": 1008, "reason": ""})
                return
        await self.app(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


def _header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
