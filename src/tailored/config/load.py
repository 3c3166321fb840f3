"""Build a :class:`TrainConfig` from YAML, CLI flags and keyword arguments, gathering every problem."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tailored.config.schema import TrainConfig
from tailored.errors import ConfigError


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_train_config(
    settings: dict[str, Any], *, yaml_path: str | Path | None = None, method_fields: dict[str, set[str]] | None = None
) -> TrainConfig:
    """Merge YAML (lowest) and explicit settings (highest) into a validated TrainConfig.

    ``method_fields`` maps each method name to the flat option names it accepts; any setting that is
    neither a TrainConfig field nor one of the chosen method's options is reported by name, with a
    suggestion when it looks like a typo.
    """
    merged: dict[str, Any] = read_yaml(yaml_path) if yaml_path else {}
    merged.update({k.replace("-", "_"): v for k, v in settings.items() if v is not None})
    known = set(TrainConfig.model_fields)
    options = dict(merged.pop("method_options", None) or {})
    problems = []
    method = str(merged.get("method", TrainConfig.model_fields["method"].default))
    allowed = (method_fields or {}).get(method)
    all_method_fields = set().union(*(method_fields or {}).values()) if method_fields else set()
    for key in [k for k in merged if k not in known]:
        value = merged.pop(key)
        if allowed is not None and key in allowed:
            options[key] = value
        elif method_fields is None:
            options[key] = value
        else:
            close = difflib.get_close_matches(key, sorted(known | all_method_fields), n=1)
            where = f"; it belongs to another method, not {method!r}" if key in all_method_fields else ""
            problems.append(f"unknown setting {key!r}{where}" + (f" (did you mean {close[0]!r}?)" if close and not where else ""))
    merged["method_options"] = options
    try:
        config = TrainConfig(**merged)
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "config"
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        config = None
    if problems:
        raise ConfigError(problems, hint="see `tailored train --help` for every setting and its meaning")
    assert config is not None
    return config


def dump_yaml(config: TrainConfig) -> str:
    """The config as flat YAML (method options inlined), loadable again with --config."""
    data = config.model_dump(exclude={"method_options"})
    data.update(config.method_options)
    return yaml.safe_dump(data, sort_keys=False)
