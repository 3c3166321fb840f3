"""The price and device tables: a YAML file shipped with the package, overridable with ``--prices``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tailored.errors import ConfigError


def load_prices(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped table, with the entries of ``path`` (same layout) replacing the shipped ones.

    Args:
        path: a user's YAML file; None for the shipped table only.
    """
    table = yaml.safe_load(resources.files("tailored.estimate").joinpath("prices.yaml").read_text(encoding="utf-8"))
    if path is None:
        return table
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--prices {p}: no such file", hint="copy the shipped table (tailored/estimate/prices.yaml) and edit it")
    try:
        user = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--prices {p}: not valid YAML ({exc})") from exc
    if not isinstance(user, dict):
        raise ConfigError(f"--prices {p}: expected a mapping with devices/hosted keys")
    for key, value in user.items():
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            table[key] = {**table[key], **{k.lower() if key == "devices" else k: v for k, v in value.items()}}
        else:
            table[key] = value
    return table


def device_entry(table: dict[str, Any], name: str) -> dict[str, Any]:
    """The row of device ``name`` (case and dashes forgiven: ``A100-80GB``, ``a100_80gb``)."""
    key = name.lower().replace("_", "-").replace(" ", "")
    devices = table.get("devices", {})
    if key not in devices:
        raise ConfigError(f"--gpu {name}: not in the device table", hint=f"known: {', '.join(devices)}; or add it with --prices FILE")
    return {"name": key, **devices[key]}
