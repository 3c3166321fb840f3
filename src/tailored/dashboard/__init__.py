"""The web dashboard of ``tailored serve``: data, jobs, runs, playground and arena pages at ``/``.

It sits above the serve app: :func:`attach` adds its routes to a built server's app and wraps the
app in :class:`~tailored.dashboard.session.SessionGate` (login by API key into a session cookie,
CSRF on every change). The pages call the service's own ``/v1`` API and the ``/ui/api`` routes
here; every asset ships in this package (no CDN, no Node).
"""

from __future__ import annotations

from typing import Any


def attach(built: Any) -> Any:
    """Add the dashboard to ``built`` (a :class:`~tailored.serve.server.Built`) before it starts serving."""
    from tailored.dashboard import routes, routes_arena, runs
    from tailored.dashboard.session import Sessions, SessionGate

    app = built.app
    app.state.sessions = Sessions()
    app.state.arena = None
    for router in (routes.router, runs.router, routes_arena.router):
        app.include_router(router)
    app.add_middleware(SessionGate, keys=app.state.keys, sessions=app.state.sessions)
    return built
