"""Serve a base model and its fine-tunes behind an OpenAI-compatible HTTP API.

``tailored serve`` (CLI) or :func:`start` (a server in a background thread). Layout, by resource as in
vLLM: ``protocol`` (request/response shapes), ``app`` (auth, errors, request ids), ``routes_chat``,
``routes_models``, ``registry`` (model ids ↔ run folders), ``engine`` (the built-in engine over
``request`` (render + check), ``continuous`` (queue, the thread stepping :mod:`tailored.engine`) and
``models_cache`` (adapters, models)), ``scheduler`` + ``decode`` (``batching: static``), ``vllm_engine``
(optional).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "build", "start"]


def __getattr__(name: str) -> Any:
    if name in ("start", "build"):
        from tailored.serve import server

        return getattr(server, name)
    if name == "ServeSettings":
        from tailored.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(name)
