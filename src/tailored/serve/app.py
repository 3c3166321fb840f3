"""The FastAPI app: OpenAI routes under ``/v1``, bearer-key auth, request ids, OpenAI error envelopes.

Every error leaves as ``{"error": {"message", "type", "param", "code"}}`` with the status the SDK maps
to the right exception (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429
RateLimitError, 500 InternalServerError).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tailored.errors import ConfigError, ModelError, TailoredError
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


def create_app(engine: Any, registry: Any, api_key: str | None = None) -> FastAPI:
    """The app serving ``registry``'s models through ``engine``.

    Args:
        engine: a built-in :class:`~tailored.serve.engine.Engine` (or the vLLM one).
        registry: the :class:`~tailored.serve.registry.Registry` of model ids.
        api_key: if set, every request must send ``Authorization: Bearer <api_key>``.
    """
    from tailored.serve import routes_chat, routes_models

    app = FastAPI(title="Tailored", docs_url=None, redoc_url=None)
    app.state.engine, app.state.registry = engine, registry

    @app.middleware("http")
    async def auth_and_ids(request: Request, call_next: Any) -> Any:
        path = request.scope["path"]
        if path.startswith("/v1") and len(path) > 3 and path[3] != "/":  # `openai -b .../v1` without the slash
            request.scope["path"] = "/v1/" + path[3:]
        request_id = f"req_{uuid.uuid4().hex[:20]}"
        if api_key is not None and request.scope["path"] != "/health":
            sent = request.headers.get("authorization", "")
            token = sent[7:] if sent.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                response = error_response(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`",
                                          "invalid_request_error", code="invalid_api_key")
                response.headers["x-request-id"] = request_id
                return response
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
    return app


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose the server beyond this machine without a key."""
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if not loopback and not api_key:
        raise ConfigError(
            f"--host {host} exposes the server to the network, but no API key is set",
            hint="pass --api-key KEY (or set TAILORED_API_KEY), or bind to 127.0.0.1",
        )
