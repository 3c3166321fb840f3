"""Browser sessions: an API key exchanged for an HttpOnly, SameSite=Strict cookie, and CSRF on every change.

:class:`SessionGate` sits outside the serve app's :class:`~tailored.serve.app.Gate`: a request that
carries a session cookie (and no ``Authorization`` header) is given the session's key as a bearer
token, so the service's own auth and tenancy rules decide everything after it. A state-changing
request authenticated by the cookie must also send the session's CSRF token in ``x-csrf-token``
(a page of another site can make the browser send the cookie, never read the token). Requests
with their own bearer key (the SDK, curl) are untouched.

Sessions live in the server's memory: a restart logs everyone out. A keyless server (local only)
needs no login; its pages still get a session, for the CSRF token.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

COOKIE = "tailored_session"
SAFE = ("GET", "HEAD", "OPTIONS")
TTL_S = 12 * 3600
OPEN = ("/ui/login", "/ui/static/")  # reachable before login: the login page and its assets


@dataclass
class Session:
    token: str  # the API key it was opened with ("" on a keyless server)
    csrf: str
    expires: float


class Sessions:
    """Open sessions by id (thread-safe; expired ones are dropped when looked up)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(token, secrets.token_urlsafe(24), time.time() + TTL_S)
        with self._lock:
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._by_id.get(sid)
            if session is not None and session.expires < time.time():
                del self._by_id[sid]
                return None
            return session

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def cookie_of(headers: dict[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def set_cookie(sid: str, *, secure: bool = False, clear: bool = False) -> str:
    value = f"{COOKIE}={'' if clear else sid}; Path=/; HttpOnly; SameSite=Strict"
    return value + ("; Max-Age=0" if clear else f"; Max-Age={TTL_S}") + ("; Secure" if secure else "")


def asset(name: str) -> bytes:
    return resources.files("tailored.dashboard").joinpath("static", name).read_bytes()


CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


class SessionGate:
    """Login, logout, the open assets, and cookie → bearer (with the CSRF check) for everything else."""

    def __init__(self, app: Any, keys: Any, sessions: Sessions) -> None:
        self.app, self.keys, self.sessions = app, keys, sessions

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope.get("method", "GET")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path.startswith("/ui/static/") and method in SAFE:
            return await self._asset(path.removeprefix("/ui/static/"), send)
        if path == "/ui/login":
            if not self.keys.required:
                return await _redirect(send, "/")
            if method == "POST":
                return await self._login(scope, receive, send, headers)
            return await _reply(send, 200, asset("login.html"), "text/html; charset=utf-8")
        sid = cookie_of(headers)
        session = self.sessions.get(sid)
        if "authorization" not in headers and session is not None:
            if method not in SAFE and not hmac.compare_digest(headers.get("x-csrf-token", ""), session.csrf):
                return await _json(send, 403, "missing or wrong x-csrf-token: reload the page and try again", "csrf_failed")
            if path == "/ui/logout" and method == "POST":
                self.sessions.close(sid)
                return await _redirect(send, "/ui/login" if self.keys.required else "/", cookie=set_cookie("", clear=True))
            if session.token:
                scope["headers"] = [*scope.get("headers", []), (b"authorization", f"Bearer {session.token}".encode())]
        elif path.startswith("/ui/api/") and method not in SAFE:  # dashboard changes need a session (and its token)
            return await _json(send, 403, "this dashboard request needs a session and its x-csrf-token", "csrf_failed")
        elif self.keys.required and "authorization" not in headers and method in SAFE and (path == "/" or (
                path.startswith("/ui/") and not path.startswith("/ui/api/"))):  # pages; the API answers 401 itself
            return await _redirect(send, "/ui/login")
        scope.setdefault("state", {})["session_id"] = sid if session is not None else None
        await self.app(scope, receive, send)

    async def _asset(self, name: str, send: Any) -> None:
        if "/" in name or name.startswith(".") or not name:
            return await _json(send, 404, "no such asset", "not_found")
        try:
            body = asset(name)
        except (FileNotFoundError, IsADirectoryError):
            return await _json(send, 404, f"no such asset: {name}", "not_found")
        kind = CONTENT_TYPES.get(name[name.rfind("."):], "application/octet-stream")
        await _reply(send, 200, body, kind + "; charset=utf-8", cache="max-age=300")

    async def _login(self, scope: dict[str, Any], receive: Any, send: Any, headers: dict[str, str]) -> None:
        origin, host = headers.get("origin"), headers.get("host", "")
        if origin and origin.split("://", 1)[-1].rstrip("/") != host:  # login CSRF: only this site's own form
            return await _json(send, 403, "login from another site's page refused", "csrf_failed")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > 16384:
                return await _json(send, 413, "login form too large", "request_too_large")
            if not message.get("more_body"):
                break
        key = (parse_qs(body.decode("utf-8", "replace")).get("key") or [""])[0].strip()
        if self.keys.caller(key) is None:
            return await _redirect(send, "/ui/login?failed=1")
        sid, _ = self.sessions.open(key)
        await _redirect(send, "/", cookie=set_cookie(sid, secure=scope.get("scheme") == "https"))


async def _reply(send: Any, status: int, body: bytes, kind: str, *, extra: list[tuple[bytes, bytes]] | None = None,
                 cache: str = "no-store") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", kind.encode()), (b"content-length", str(len(body)).encode()), (b"cache-control", cache.encode()),
        (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    await _reply(send, status, body.encode(), "application/json")


async def _redirect(send: Any, to: str, *, cookie: str | None = None) -> None:
    extra = [(b"location", to.encode())] + ([(b"set-cookie", cookie.encode())] if cookie else [])
    await _reply(send, 303, b"", "text/plain", extra=extra)
