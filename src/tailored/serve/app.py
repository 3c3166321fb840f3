"""The FastAPI app: OpenAI routes under ``/v1``, bearer-key auth, request ids, OpenAI error envelopes.

Every error leaves as ``{"error": {"message", "type", "param", "code"}}`` with the status the SDK maps
to the right exception (400 BadRequestError, 401 AuthenticationError, 403 PermissionDeniedError, 404
NotFoundError, 413, 429 RateLimitError, 500 InternalServerError), and every answer carries an
``x-request-id``. A 500 never carries the exception's text: it is logged under the request id, which the
message names.

Every request passes :class:`Gate` first (plain ASGI, so streams and disconnects reach the routes
untouched): a request id; on a keyless server, only local Host and Origin (or ``allowed_origins``);
then the key (``/health`` needs none); then the body size (``max_request_bytes``, 413 beyond it).
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tailored.errors import ConfigError, ModelError, TailoredError
from tailored.serve.keys import Caller, Keys
from tailored.serve.protocol import ErrorBody, ErrorResponse
from tailored.serve.settings import ServeSettings

log = logging.getLogger("tailored.serve")
OPEN_PATHS = ("/health",)  # answered without a key (liveness only: it says nothing about the server)


def error_body(status: int, message: str, type_: str, *, param: str | None = None, code: str | None = None) -> bytes:
    return ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code)).model_dump_json().encode()


def error_response(status: int, message: str, type_: str, *, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", "") or "unknown"


def internal_message(request_id: str) -> str:
    """What a client is told about a failure on our side (the details are in the server's log)."""
    return f"The server had an error while processing your request (request id {request_id}; its log has the details)"


def error_from(exc: TailoredError, request_id: str = "") -> JSONResponse:
    """Map a TailoredError to its HTTP status and OpenAI error type (5xx messages name the request id)."""
    status = getattr(exc, "http_status", None) or (500 if isinstance(exc, ModelError) else 400)
    type_ = getattr(exc, "error_type", None) or ("server_error" if status >= 500 else "invalid_request_error")
    message = exc.message if not exc.hint else f"{exc.message} ({exc.hint})"
    if status >= 500 and request_id and request_id not in message:
        message += f" (request id {request_id})"
    headers = {"retry-after": "1"} if status == 429 else None
    return error_response(status, message, type_, param=getattr(exc, "param", None), code=getattr(exc, "code", None),
                          headers=headers)


def create_app(engine: Any, registry: Any, keys: Keys | None = None, jobs: Any = None,
               settings: ServeSettings | None = None, traffic: Any = None) -> FastAPI:
    """The app serving ``registry``'s models through ``engine`` (and the fine-tuning ``jobs`` service, if given).

    Args:
        engine: a built-in :class:`~tailored.serve.engine.Engine` (or the vLLM one).
        registry: the :class:`~tailored.serve.registry.Registry` of model ids.
        keys: the API keys and their projects; without any, only local callers are served (by Host/Origin).
        jobs: a :class:`~tailored.jobs.service.Jobs` for ``/v1/files`` and ``/v1/fine_tuning/jobs``.
        settings: ``max_request_bytes``, ``max_upload_bytes`` and ``allowed_origins`` (defaults otherwise).
        traffic: a :class:`~tailored.serve.traffic.TrafficLog` (``--log-requests``); None logs nothing.
    """
    from tailored.serve import routes_chat, routes_jobs, routes_models, routes_traffic

    keys = keys or Keys({})
    settings = settings or ServeSettings()
    app = FastAPI(title="Tailored", docs_url=None, redoc_url=None)
    app.state.engine, app.state.registry, app.state.jobs, app.state.traffic = engine, registry, jobs, traffic
    app.state.keys = keys

    @app.exception_handler(TailoredError)
    async def tailored_error(request: Request, exc: TailoredError) -> JSONResponse:
        return error_from(exc, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return error_response(400, f"{param}: {first['msg']}" if param else first["msg"], "invalid_request_error", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", type_)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness for load balancers and orchestrators; the counters are on ``/v1/stats`` (a key needed)."""
        return {"status": "ok"}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        """The engine's counters and the run folders not served (and why)."""
        return {"object": "stats", "engine": dict(getattr(engine, "stats", {}) or {}),
                "unavailable": [{"run": u.run, "reason": u.reason} for u in registry.unavailable()]}

    app.include_router(routes_models.router, prefix="/v1")
    app.include_router(routes_chat.router, prefix="/v1")
    app.include_router(routes_traffic.router, prefix="/v1")
    if jobs is not None:
        app.include_router(routes_jobs.router, prefix="/v1")
    app.add_middleware(Gate, keys=keys, settings=settings)
    if settings.allowed_origins:  # outermost: answers browsers' preflights, adds the CORS headers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["x-request-id"])
    return app


class _TooLarge(Exception):
    pass


class Gate:
    """Request id, local-only check of keyless servers, auth and the body limit, before any route runs.

    Also the last word on failures: an exception no handler turned into an answer is logged with the
    request id and answered with a 500 that names the id (never the exception's text).
    """

    def __init__(self, app: Any, keys: Keys, settings: ServeSettings) -> None:
        self.app, self.keys, self.settings = app, keys, settings
        self.origins = set(settings.allowed_origins)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path.startswith("/v1") and len(path) > 3 and path[3] != "/":  # `openai -b .../v1` without the slash
            scope["path"] = "/v1/" + path[3:]
        request_id = f"req_{uuid.uuid4().hex[:20]}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

        async def answer(status: int, message: str, code: str, type_: str = "invalid_request_error") -> None:
            body = error_body(status, message, type_, code=code)
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode())]})
            await send({"type": "http.response.body", "body": body})

        if not self.keys.required and not self._local(headers):  # a keyless server: never reachable from elsewhere
            return await answer(403, "this server has no API key and answers only local clients (Host and Origin must "
                                     "be localhost, or Origin one of --allowed-origins)", "not_local")
        sent = headers.get("authorization", "")
        caller: Caller | None = self.keys.caller(sent[7:].strip() if sent.lower().startswith("bearer ") else "")
        if caller is None and scope["path"] not in OPEN_PATHS:
            return await answer(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`", "invalid_api_key")
        state["caller"] = caller
        limit = self._limit(scope)
        length = headers.get("content-length", "")
        too_large = f"the request body is larger than this server accepts ({limit} bytes; --{self._limit_name(scope)})"
        if length.isdigit() and int(length) > limit:
            return await answer(413, too_large, "request_too_large")

        received = 0
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, counted_receive, send_with_id)
        except Exception as exc:
            if received > limit:
                if not started:
                    await answer(413, too_large, "request_too_large")
                return
            log.error("request %s failed: %s %s", request_id, scope.get("method"), scope["path"], exc_info=exc)
            if not started:
                await answer(500, internal_message(request_id), "internal_error", "server_error")

    def _limit(self, scope: dict[str, Any]) -> int:
        upload = scope.get("method") == "POST" and scope["path"].rstrip("/") == "/v1/files"
        return self.settings.max_upload_bytes if upload else self.settings.max_request_bytes

    def _limit_name(self, scope: dict[str, Any]) -> str:
        return "max-upload-bytes" if self._limit(scope) == self.settings.max_upload_bytes else "max-request-bytes"

    def _local(self, headers: dict[str, str]) -> bool:
        """Whether Host (and Origin, when a browser sends one) name this machine: no DNS-rebinding page gets in."""
        origin = headers.get("origin")
        allowed = origin is None or "*" in self.origins or origin.rstrip("/") in self.origins
        if not allowed and (origin == "null" or not _is_local(urlsplit(origin).netloc)):  # "null": sandboxed frames
            return False
        return _is_local(headers.get("host", ""))


def _is_local(host: str) -> bool:
    """Whether a Host header (or an origin's netloc) names this machine: localhost or a loopback address."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8 and ::1; never a name like 127.evil.example
    except ValueError:
        return False


def check_bind(host: str, keys: Keys) -> None:
    """Refuse to expose the server beyond this machine without a key."""
    if not _is_local(host) and not keys.required:
        raise ConfigError(
            f"--host {host} exposes the server to the network, but no API key is set",
            hint="pass --api-key KEY or --api-keys FILE (or set TAILORED_API_KEY), or bind to 127.0.0.1",
        )
