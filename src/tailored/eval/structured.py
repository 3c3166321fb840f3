"""What ``tailored chat`` (and a Python caller) hold an answer to: a JSON schema, any JSON object, a regex,
a fixed choice, or a classification run's own label set (``constrain="labels"``)."""

from __future__ import annotations

import json
from pathlib import Path

from tailored.engine.constraints import Structure
from tailored.errors import ConfigError
from tailored.eval.generate import ChatModel


def label_structure(model: ChatModel) -> Structure:
    """The choice of a classification run's labels (recorded in its manifest, or read from its training data)."""
    from tailored.eval.aftertrain import run_labels

    labels = run_labels(model.manifest) if model.manifest is not None else None
    if not labels:
        raise ConfigError(f"--constrain labels: {model.name} is not a classification run (no label set is known)",
                          hint="train on data whose answers are a small set of labels, or give --choice for each label")
    return Structure.choice(labels)


def read_schema(path: str | Path) -> dict:
    """A JSON schema file (``--json-schema``), with the line of a syntax error."""
    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--json-schema {path}: cannot read it ({exc.strerror})", hint="give a JSON schema file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"line {exc.lineno}: " if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"--json-schema {path}: {where}not JSON ({exc})", hint="the file holds one JSON schema object") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"--json-schema {path}: a JSON schema is an object, not {type(schema).__name__}")
    return schema


def cli_structure(model: ChatModel | None, *, constrain: str | None = None, json_schema: str | None = None,
                  json_object: bool = False, regex: str | None = None, choices: list[str] | None = None) -> Structure | None:
    """The one constraint the chat flags name (None: free text); two at once is an error."""
    found: list[Structure] = []
    if constrain == "labels" and model is not None:
        found.append(label_structure(model))
    elif constrain not in (None, "none"):
        raise ConfigError(f"--constrain {constrain!r} is not known", hint="use labels or none")
    if json_schema:
        found.append(Structure("json_schema", read_schema(json_schema), strict=True))
    if json_object:
        found.append(Structure("json_object"))
    if regex:
        found.append(Structure("regex", regex))
    if choices:
        found.append(Structure.choice(choices))
    if len(found) > 1:
        raise ConfigError("give at most one of --constrain labels, --json-schema, --json, --regex, --choice")
    return found[0] if found else None
