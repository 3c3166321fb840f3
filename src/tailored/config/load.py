"""Build a :class:`TrainConfig` from YAML, CLI flags and keyword arguments, gathering every problem."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

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
    settings: dict[str, Any], *, yaml_path: str | Path | None = None, methods: dict[str, type[BaseModel]] | None = None
) -> TrainConfig:
    """Merge YAML (lowest) and explicit settings (highest) into a validated TrainConfig.

    ``methods`` maps each method name to its options model (``tailored.methods.base.method_options()``).
    Every problem is reported at once, general settings and the chosen method's options alike: an
    unknown method first (with the closest name), a setting that is neither a general one nor an
    option of the chosen method by name (with a suggestion when it looks like a typo), and invalid
    values with the setting they belong to.
    """
    merged: dict[str, Any] = read_yaml(yaml_path) if yaml_path else {}
    merged.update({k.replace("-", "_"): v for k, v in settings.items() if v is not None})
    known = set(TrainConfig.model_fields)
    options = dict(merged.pop("method_options", None) or {})
    problems = []
    method = str(merged.get("method", TrainConfig.model_fields["method"].default))
    fields = {name: set(model.model_fields) for name, model in (methods or {}).items()}
    all_method_fields = set().union(*fields.values()) if fields else set()
    if methods is not None and method not in methods:
        close = difflib.get_close_matches(method, list(methods), n=1)
        problems.append(f"method {method!r} is not known" + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; choose one of: {', '.join(methods)}")
    allowed = fields.get(method)
    for key in [k for k in merged if k not in known]:
        value = merged.pop(key)
        if methods is None or (allowed is None and key in all_method_fields) or (allowed and key in allowed):
            options[key] = value  # routed to the method (an unknown method is reported above, once)
        else:
            close = difflib.get_close_matches(key, sorted(known | all_method_fields), n=1)
            where = f"; it belongs to another method, not {method!r}" if key in all_method_fields else ""
            problems.append(f"unknown setting {key!r}{where}" + (f" (did you mean {close[0]!r}?)" if close and not where else ""))
    merged["method_options"] = options
    try:
        config = TrainConfig(**merged)
    except ValidationError as exc:
        problems += _problems(exc)
        config = None
    if methods is not None and method in methods:
        try:
            methods[method](**options)
        except ValidationError as exc:
            problems += _problems(exc)
    if problems:
        raise ConfigError(problems, hint="see `tailored train --help` for every setting and its meaning")
    assert config is not None
    return config


def _problems(exc: ValidationError) -> list[str]:
    """One line per invalid value, named by its setting."""
    return [f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()]


def dump_yaml(config: TrainConfig) -> str:
    """The config as flat YAML (method options inlined), loadable again with --config."""
    data = config.model_dump(exclude={"method_options"})
    data.update(config.method_options)
    return yaml.safe_dump(data, sort_keys=False)
