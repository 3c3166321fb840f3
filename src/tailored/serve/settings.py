"""``ServeSettings``: every setting of ``tailored serve`` (one name across CLI flags, Python and docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tailored.errors import ConfigError


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(None, description="Base model (folder, .gguf or 'smollm2'); default: the base of the first run found, else smollm2.")
    runs: list[str] = Field(default_factory=list, description="Run folders, or folders holding run folders (rescanned: new runs appear without a restart).")
    host: str = Field("127.0.0.1", description="Interface to bind; anything but loopback needs an API key.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    api_key: str | None = Field(None, description="Bearer key clients must send (also env TAILORED_API_KEY): an admin key of project 'default'.")
    api_keys: str | None = Field(None, description="YAML file of keys and their projects (keys: [{key, project, admin}]); also env TAILORED_API_KEYS=KEY=PROJECT,...")
    jobs: bool = Field(True, description="Serve the fine-tuning API (/v1/files, /v1/fine_tuning/jobs), its state in $TAILORED_HOME/service.")
    jobs_concurrency: int = Field(1, ge=1, description="Jobs training at once (1 on a CPU: two would share its cores).")
    jobs_launcher: str = Field("process", pattern="^(process|torchrun|command)$", description="How a job trains: one process, torchrun over --jobs-nproc processes, or --jobs-command.")
    jobs_nproc: int = Field(1, ge=1, description="Processes per job with --jobs-launcher torchrun.")
    jobs_command: str | None = Field(None, description="With --jobs-launcher command: a shell command holding {command}, e.g. 'srun --ntasks=1 {command}'.")
    engine: str = Field("builtin", pattern="^(builtin|vllm)$", description="builtin (CPU/CUDA, transformers + peft) or vllm (CUDA, vLLM multi-LoRA).")
    device: str = Field("auto", description="cpu, cuda, or auto (cuda when available).")
    max_adapters: int = Field(8, ge=1, description="LoRA adapters kept in memory at once (least recently used are unloaded).")
    max_standalone: int = Field(1, ge=1, description="Fine-tunes that are not plain LoRA on the base (full, DoRA, IA3, QLoRA, other bases) kept in memory at once.")
    max_batch: int = Field(16, ge=1, description="Most sequences decoded together in one batch.")
    batching: str = Field("continuous", pattern="^(continuous|static)$", description="continuous: requests join the running batch at the next step (tailored.engine); static: a batch runs to its end (the benchmark's reference).")
    prefix_cache_mb: int = Field(512, ge=0, description="Memory for KV blocks of shared prompt prefixes, reused across requests (0 = off; least recently used dropped).")
    prefill_chunk: int = Field(64, ge=8, description="Prompt tokens per prefill pass (and per prefix-cache block): a long prompt is prefilled between decode steps, never all at once.")
    batch_wait_ms: float = Field(5.0, ge=0, description="How long the scheduler waits to collect requests into a batch.")
    queue_size: int = Field(64, ge=1, description="Most requests waiting for a batch; beyond it requests get HTTP 429.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for (and the default).")
    max_batch_tokens: int = Field(32768, ge=64, description="Bound on a batch's rows × (prompt + max_tokens), which bounds KV-cache memory.")
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body in bytes (HTTP 413 beyond it), file uploads to /v1/files excepted (see --max-upload-bytes).")
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="Largest file upload to /v1/files in bytes (HTTP 413 beyond it; OpenAI's limit is 512 MB).")
    log_requests: bool = Field(False, description="Log every chat request (prompt, answer, latency, tokens, finish reason) in $TAILORED_HOME/service for `tailored drift` and feedback; off unless given.")
    log_projects: list[str] = Field([], description="With --log-requests: log only these projects' traffic (default: every project's).")
    log_retention_days: float = Field(30.0, gt=0, description="With --log-requests: logged requests older than this are deleted.")
    log_redact: str = Field("none", description="With --log-requests: rewrite texts before they are written: none, pii (e-mails, card and phone numbers masked) or module:function (your own str -> str).")
    allowed_origins: list[str] = Field([], description="Web origins (scheme://host[:port]) allowed to call the server from a browser: CORS, and past the keyless server's local-only check.")

    @field_validator("log_projects", mode="before")
    @classmethod
    def _projects(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        """A comma-separated string (the command line) or a list; each entry an origin as browsers send it."""
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list):
            return items
        out = []
        for item in filter(None, items):
            if not isinstance(item, str) or (item not in ("*", "null") and not _is_origin(item)):
                raise ValueError(f"{item!r} is not an origin: expected scheme://host[:port] (e.g. http://localhost:3000), '*' or 'null'")
            out.append(item.rstrip("/"))
        return out


def _is_origin(text: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text.rstrip("/"))
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.path and not parts.query


def parse_settings(**values: Any) -> ServeSettings:
    """``ServeSettings`` from flat values, with every problem named (raises ConfigError)."""
    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        problems = [f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise ConfigError(problems, hint="see `tailored serve --help`") from None
