"""The FastAPI app: OpenAI routes under ``/v1``, bearer-key auth, request ids, OpenAI error envelopes.

Every error leaves as ``{"error": {"message", "type", "param", "code"}}`` with the status the SDK maps
to the right exception (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429
RateLimitError, 500 InternalServerError).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tailored.errors import ConfigError, ModelError, TailoredError
from tailored.serve.keys import Keys
from tailored.serve.protocol import ErrorBody, ErrorResponse

log = logging.getLogger("tailored.serve")


def error_response(status: int, message: str, type_: str, *, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def error_from(exc: TailoredError) -> JSONResponse:
    """Map a TailoredError to its HTTP status and OpenAI error type."""
    status = getattr(exc, "http_status", None) or (500 if isinstance(exc, ModelError) else 400)
    type_ = getattr(exc, "error_type", None) or ("server_error" if status >= 500 else "invalid_request_error")
    message = exc.message if not exc.hint else f"{exc.message} ({exc.hint})"
    headers = {"retry-after": "1"} if status == 429 else None
    return error_response(status, message, type_, param=getattr(exc, "param", None), code=getattr(exc, "code", None),
                          headers=headers)


def create_app(engine: Any, registry: Any, keys: Keys | None = None, jobs: Any = None) -> FastAPI:
    """The app serving ``registry``'s models through ``engine`` (and the fine-tuning ``jobs`` service, if given).

    Args:
        engine: a built-in :class:`~tailored.serve.engine.Engine` (or the vLLM one).
        registry: the :class:`~tailored.serve.registry.Registry` of model ids.
        keys: the API keys and their projects; without any, only local callers are served (by Host/Origin).
        jobs: a :class:`~tailored.jobs.service.Jobs` for ``/v1/files`` and ``/v1/fine_tuning/jobs``.
    """
    from tailored.serve import routes_chat, routes_jobs, routes_models

    keys = keys or Keys({})
    app = FastAPI(title="Tailored", docs_url=None, redoc_url=None)
    app.state.engine, app.state.registry, app.state.jobs = engine, registry, jobs

    @app.middleware("http")
    async def auth_and_ids(request: Request, call_next: Any) -> Any:
        path = request.scope["path"]
        if path.startswith("/v1") and len(path) > 3 and path[3] != "/":  # `openai -b .../v1` without the slash
            request.scope["path"] = "/v1/" + path[3:]
        request_id = f"req_{uuid.uuid4().hex[:20]}"
        sent = request.headers.get("authorization", "")
        caller = keys.caller(sent[7:] if sent.lower().startswith("bearer ") else "")
        refused = None
        if not keys.required and not _local(request):  # a keyless server: never reachable from a web page elsewhere
            refused = error_response(403, "this server has no API key and answers only local clients (Host and Origin "
                                     "must be localhost)", "invalid_request_error", code="not_local")
        elif caller is None and request.scope["path"] != "/health":
            refused = error_response(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`",
                                     "invalid_request_error", code="invalid_api_key")
        if refused is not None:
            refused.headers["x-request-id"] = request_id
            return refused
        request.state.caller = caller
        response = await call_next(request)
        response.headers["x-request-id"] = request_id
        return response

    @app.exception_handler(TailoredError)
    async def tailored_error(request: Request, exc: TailoredError) -> JSONResponse:
        return error_from(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return error_response(400, f"{param}: {first['msg']}" if param else first["msg"], "invalid_request_error", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", type_)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "stats": getattr(engine, "stats", {})}

    app.include_router(routes_models.router, prefix="/v1")
    app.include_router(routes_chat.router, prefix="/v1")
    if jobs is not None:
        app.include_router(routes_jobs.router, prefix="/v1")
    return app


def _is_local(host: str) -> bool:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return host in ("localhost", "::1", "") or host.startswith("127.")


def _local(request: Request) -> bool:
    """Whether Host (and Origin, when a browser sends one) name this machine: no DNS-rebinding page gets in."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        from urllib.parse import urlsplit

        if not _is_local(urlsplit(origin).netloc):
            return False
    return _is_local(request.headers.get("host", ""))


def check_bind(host: str, keys: Keys) -> None:
    """Refuse to expose the server beyond this machine without a key."""
    if not _is_local(host) and not keys.required:
        raise ConfigError(
            f"--host {host} exposes the server to the network, but no API key is set",
            hint="pass --api-key KEY or --api-keys FILE (or set TAILORED_API_KEY), or bind to 127.0.0.1",
        )
