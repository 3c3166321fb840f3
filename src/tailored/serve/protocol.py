"""Request and response bodies in OpenAI's shapes (what the official ``openai`` SDK sends and accepts).

Requests accept what the SDK may send and ignore unknown fields; features the server does not
implement (tools, penalties, logit_bias) are refused with a 400 naming the field rather than
silently ignored. Structured outputs come as OpenAI's ``response_format`` (``json_object``,
``json_schema``) or as vLLM's extra fields (``guided_choice``, ``guided_regex``, ``guided_json``, and
vLLM's newer ``structured_outputs: {choice | regex | json}``): at most one per request. Responses emit every key the SDK's strict validation requires.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tailored.engine.constraints import Structure
from tailored.engine.logprobs import MAX_TOP_LOGPROBS

Role = Literal["developer", "system", "user", "assistant", "tool", "function"]


class RequestObject(BaseModel):
    """A JSON object of a request: unknown keys are kept (and ignored); anything but an object is refused.

    FastAPI validates bodies "from attributes", whose message for a non-object speaks of attributes;
    this keeps pydantic's plain one ("Input should be a valid dictionary or instance of Message").
    """

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, value: Any) -> Any:
        if not isinstance(value, (dict, cls)):
            raise PydanticCustomError("model_type", "Input should be a valid dictionary or instance of {class_name}",
                                      {"class_name": cls.__name__})
        return value


class TextPart(RequestObject):
    type: str
    text: str | None = None


class Message(RequestObject):
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None

    def plain(self) -> dict[str, str]:
        """``{"role", "content"}`` for the chat template: parts joined, ``developer`` mapped to ``system``."""
        content = self.content
        if isinstance(content, list):
            kinds = {p.type for p in content} - {"text"}
            if kinds:
                raise ValueError(f"content parts of type {sorted(kinds)} are not supported (text only)")
            content = "".join(p.text or "" for p in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content or ""}


class StreamOptions(RequestObject):
    include_usage: bool = False


class ChatCompletionRequest(RequestObject):
    """``POST /v1/chat/completions``."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension (pass via extra_body): always generate max_tokens (benchmarks)
    guided_choice: list[str] | None = None  # vLLM's structured-output extensions (extra_body)
    guided_regex: str | None = None
    guided_json: dict[str, Any] | str | None = None
    constrain: Literal["labels", "none"] | None = None  # "labels": exactly one of a classification run's labels
    structured_outputs: dict[str, Any] | None = None  # vLLM >= 0.12: {"choice": [...]} | {"regex": ...} | {"json": ...}

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops

    @model_validator(mode="after")
    def _unsupported(self) -> ChatCompletionRequest:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported by this server (leave it unset or 0)")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by this server")
        if self.top_logprobs is not None:
            if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
                raise ValueError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
            if self.top_logprobs and not self.logprobs:
                raise ValueError("top_logprobs needs logprobs: true")
        if self.tools:
            raise ValueError("tools are not supported by this server")
        self.structure()  # a malformed constraint is refused here, with the field that holds it
        return self

    def structure(self) -> Structure | None:
        """The one output constraint the request names (None: free text); raises ValueError for two or a bad one."""
        found: list[Structure] = []
        fmt = self.response_format or {}
        kind = fmt.get("type")
        if kind == "json_object":
            found.append(Structure("json_object"))
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise ValueError("response_format.json_schema must be an object with a `schema` object")
            found.append(Structure("json_schema", spec.get("schema") or {}, strict=bool(spec.get("strict"))))
        elif kind not in (None, "text"):
            raise ValueError(f"response_format type {kind!r} is not supported (text, json_object or json_schema)")
        vllm = dict(self.structured_outputs or {})
        choice = self.guided_choice if self.guided_choice is not None else vllm.get("choice")
        regex = self.guided_regex if self.guided_regex is not None else vllm.get("regex")
        schema = self.guided_json if self.guided_json is not None else vllm.get("json")
        if choice is not None:
            if not isinstance(choice, list) or not choice or not all(isinstance(c, str) and c for c in choice):
                raise ValueError("guided_choice must be a non-empty list of non-empty strings")
            found.append(Structure.choice(choice))
        if regex is not None:
            if not isinstance(regex, str) or not regex:
                raise ValueError("guided_regex must be a non-empty string")
            found.append(Structure("regex", regex))
        if schema is not None:
            import json

            try:
                value = json.loads(schema) if isinstance(schema, str) else schema
            except json.JSONDecodeError as exc:
                raise ValueError(f"guided_json is not valid JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError("guided_json must be a JSON schema object")
            found.append(Structure("json_schema", value))
        if len(found) + (self.constrain == "labels") > 1:
            raise ValueError("give at most one of response_format (json), guided_choice, guided_regex, guided_json, "
                             "constrain")
        return found[0] if found else None

    def chat_messages(self) -> list[dict[str, str]]:
        return [m.plain() for m in self.messages]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class TopLogprob(BaseModel):
    token: str
    bytes: list[int] | None = None
    logprob: float


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """``choices[i].logprobs``: one entry per answer token (stop tokens are not listed)."""

    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage | None = None


class Delta(BaseModel):
    """What a chunk adds to its choice: only the keys it sets are sent (``{}`` on a finish chunk)."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """``GET /v1/models`` item (``created`` is integer Unix seconds); the extra keys are ours."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tailored"
    root: str | None = None  # the base model id
    parent: str | None = None
    kind: str = "base"  # base | adapter | standalone
    run: str | None = None  # run folder name
    weights: str | None = None  # which of the run's weights are served: best (the default when kept), final, step-N


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    """``{"error": {...}}``: what every error answer (and a mid-stream error event) carries."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
