"""The body of ``POST /v1/fine_tuning/jobs`` as the OpenAI SDK sends it, validated, and what it asks Tailored to train.

Every field OpenAI documents is accepted or refused by name: ``reinforcement`` and integrations
(which would need an outside service) get a 400 naming them, never silence. Hyperparameters are
``"auto"`` or numbers within OpenAI's bounds. The legacy top-level ``hyperparameters`` counts as
``method.<type>.hyperparameters``. Tailored's own settings travel in the extension field ``tailored``
(``extra_body={"tailored": {"method": "dora", "lora_r": 8}}`` with the SDK): any setting of
``tailored train`` by its one name, checked like the CLI checks it.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tailored.errors import RequestError

Auto = Literal["auto"]
# Settings a job's extension may not set: the service decides them (paths, resume, threads, the post-train check).
RESERVED = ("data", "validation", "output", "model", "epochs", "batch_size", "learning_rate_multiplier", "seed",
            "threads", "save_every", "keep_checkpoints", "device", "from_run")
# The launcher's, not a job's: a job sets its strategy, the service how many processes run it (jobs/launch.py).
LAUNCH = ("nproc", "nnodes", "node_rank", "master_addr", "master_port")


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Union[Auto, int] = "auto"
    batch_size: Union[Auto, int] = "auto"
    learning_rate_multiplier: Union[Auto, float] = "auto"
    beta: Union[Auto, float, None] = None  # DPO only

    @field_validator("n_epochs")
    @classmethod
    def _epochs(cls, v: Any) -> Any:
        if v != "auto" and not 1 <= int(v) <= 50:
            raise ValueError("must be 'auto' or an integer from 1 to 50")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: Any) -> Any:
        if v != "auto" and not 1 <= int(v) <= 256:
            raise ValueError("must be 'auto' or an integer from 1 to 256")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _lr(cls, v: Any) -> Any:
        if v != "auto" and not float(v) > 0:
            raise ValueError("must be 'auto' or a number above 0")
        return v

    @field_validator("beta")
    @classmethod
    def _beta(cls, v: Any) -> Any:
        if v not in (None, "auto") and not 0 < float(v) <= 2:
            raise ValueError("must be 'auto' or a number in (0, 2]")
        return v


class MethodBody(BaseModel):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    model_config = ConfigDict(extra="forbid")


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")  # the type's own block, checked below

    type: str = "supervised"
    supervised: MethodBody | None = None
    dpo: MethodBody | None = None


class CreateJob(BaseModel):
    """The create-job request (OpenAI's fields plus the ``tailored`` extension)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    training_file: str
    validation_file: str | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    suffix: str | None = Field(None, min_length=1, max_length=64)
    seed: int | None = Field(None, ge=0, le=2147483647)
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    tailored: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and (len(v) > 16 or any(len(k) > 64 or len(x) > 512 for k, x in v.items())):
            raise ValueError("at most 16 pairs, keys up to 64 and values up to 512 characters")
        return v

    @property
    def type(self) -> str:
        return self.method.type if self.method else "supervised"

    def resolved_hyperparameters(self) -> Hyperparameters:
        """``method.<type>.hyperparameters``, else the legacy top-level ones, else all auto."""
        block = getattr(self.method, self.type, None) if self.method else None
        if block is not None and self.hyperparameters is not None:
            raise RequestError("hyperparameters is given twice: at the top level and in method." + self.type,
                               param="hyperparameters", hint="send them once, in method.<type>.hyperparameters")
        hp = block.hyperparameters if block is not None else (self.hyperparameters or Hyperparameters())
        if self.type == "supervised" and hp.beta is not None:
            raise RequestError("hyperparameters.beta is a DPO setting; method.type is supervised",
                               param="method.supervised.hyperparameters.beta")
        return hp


def parse_create(body: Any) -> CreateJob:
    """Validate a create-job body; the first problem is raised as a 400 naming the field."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", code="invalid_body")
    try:
        request = CreateJob.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise RequestError(f"{param}: this field is not supported by Tailored's fine-tuning jobs", param=param,
                               code="unsupported_parameter") from None
        raise RequestError(f"{param}: {err['msg']} (got {err.get('input')!r})", param=param, code="invalid_value") from None
    kind = request.type
    if kind not in ("supervised", "dpo"):
        raise RequestError(f"method.type {kind!r} is not supported: Tailored trains supervised and dpo jobs",
                           param="method.type", code="unsupported_method")
    extra = set((request.method.model_extra or {}) if request.method else ())
    extra |= {other for other in ("supervised", "dpo") if other != kind and getattr(request.method, other, None) is not None}
    if extra:
        raise RequestError(f"method.{sorted(extra)[0]} is not supported for method.type {kind!r}",
                           param=f"method.{sorted(extra)[0]}", code="unsupported_parameter")
    if request.integrations:
        raise RequestError("integrations are not supported: this server reaches no outside service (Weights & Biases)",
                           param="integrations", code="unsupported_parameter",
                           hint="follow the job's events, or read its result file (a step-metrics CSV)")
    extension = request.tailored or {}
    # validation: "none" (train on all of training_file) or "auto" (the default: hold out a stratified share) is the
    # job's own choice; a validation file comes by validation_file.
    own = {"validation"} if extension.get("validation") in ("auto", "none") and not request.validation_file else set()
    launch = sorted(set(extension) & set(LAUNCH))
    if launch:
        raise RequestError(f"tailored.{launch[0]}: how many processes and machines a job uses is the service's launcher "
                           "setting; a job chooses only its strategy (tailored.strategy: ddp, fsdp, zero2, zero3)",
                           param=f"tailored.{launch[0]}", code="unsupported_parameter",
                           hint="the service's operator sets it: tailored serve --jobs-launcher torchrun --jobs-nproc N")
    taken = sorted(set(extension) & set(RESERVED) - own)
    if taken:
        raise RequestError(f"tailored.{taken[0]} is set by the job itself; use the OpenAI field instead",
                           param=f"tailored.{taken[0]}", code="unsupported_parameter")
    request.resolved_hyperparameters()  # raises on a conflict
    return request
