"""A running server as a chat model: what ``tailored chat --url`` talks to (official ``openai`` client)."""

from __future__ import annotations

import os
from typing import Any

from tailored.errors import ModelError


class RemoteChat:
    """Same ``chat()`` as :class:`tailored.eval.generate.ChatModel`, answered by an OpenAI-compatible server.

    Args:
        url: the server's base URL (``http://127.0.0.1:8000/v1``; ``/v1`` is added when missing).
        model: model id or run name; default: the first fine-tune listed, else the base.
        api_key: bearer key (default: ``$TAILORED_API_KEY``, ``$OPENAI_API_KEY``, else a placeholder).
    """

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None) -> None:
        import openai

        url = url.rstrip("/")
        url = url if url.endswith("/v1") else url + "/v1"
        key = api_key or os.environ.get("TAILORED_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
        self.client = openai.OpenAI(base_url=url, api_key=key, max_retries=2)
        try:
            if model is None:
                ids = [m.id for m in self.client.models.list().data]
                model = next((i for i in ids if i.startswith("ft:")), ids[0] if ids else None)
            else:
                model = self.client.models.retrieve(model).id
        except openai.APIConnectionError as exc:
            raise ModelError(f"cannot reach a server at {url}", hint="start one with `tailored serve`") from exc
        except openai.APIStatusError as exc:
            raise ModelError(f"{url}: {exc.message}", hint="`tailored serve` lists its models when it starts") from exc
        if model is None:
            raise ModelError(f"{url} serves no models")
        self.name = model

    def chat(self, messages: list[dict[str, Any]] | str, *, max_new_tokens: int = 256, temperature: float = 0.0,
             constraint: Any = None, constrain: str | None = None, **settings: Any) -> str:
        """One answer (``messages`` may be a plain prompt string); greedy by default like ``tailored chat``.

        ``constraint`` (a :class:`~tailored.engine.constraints.Structure`) and ``constrain="labels"`` are sent
        as the server's request fields (``response_format``, ``guided_regex``, ``guided_choice``, ``constrain``).
        """
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        extra = dict(settings.pop("extra_body", None) or {})
        if constrain == "labels":
            extra["constrain"] = "labels"
        if constraint is not None:
            settings.update(request_fields(constraint, extra))
        out = self.client.chat.completions.create(model=self.name, messages=messages, max_tokens=max_new_tokens,  # type: ignore[arg-type]
                                                  temperature=temperature, extra_body=extra or None, **settings)
        return out.choices[0].message.content or ""


def request_fields(structure: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """The chat-completion fields that ask the server for ``structure`` (vLLM's extras go into ``extra``)."""
    if structure.kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if structure.kind == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": structure.value,
                                                                            "strict": structure.strict}}}
    extra["guided_regex" if structure.kind == "regex" else "guided_choice"] = (
        structure.value if structure.kind == "regex" else list(structure.value))
    return {}
