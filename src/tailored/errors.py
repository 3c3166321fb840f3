"""Error types. Every error says what went wrong, what was expected, and what to do next.

All errors derive from :class:`TailoredError` (a ``ValueError``, so callers that already catch
``ValueError`` keep working). ``hint`` holds the next step for the user; the CLI prints it and
exits non-zero.
"""

from __future__ import annotations


class TailoredError(ValueError):
    """Base error. ``hint`` is the suggested next step, shown under the message."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(TailoredError):
    """A setting is unknown, of the wrong type, or inconsistent with another. Holds every problem."""

    exit_code = 2

    def __init__(self, problems: list[str] | str, *, hint: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        text = self.problems[0] if len(self.problems) == 1 else (
            f"{len(self.problems)} problems in the configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )
        super().__init__(text, hint=hint)


class DataError(TailoredError):
    """The data cannot be used as given (invalid lines, too few examples, ...)."""


class ModelError(TailoredError):
    """A model cannot be found or loaded."""


class CheckpointError(TailoredError):
    """A run folder or checkpoint is missing, incomplete or does not match the request."""


class RequestError(TailoredError):
    """A request to the server that cannot be served as given: HTTP 400, with OpenAI's ``param`` and ``code``."""

    http_status, error_type = 400, "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.param, self.code = param, code


class NotFound(RequestError):
    """The named object does not exist, or belongs to another project (HTTP 404, never its content)."""

    http_status = 404
