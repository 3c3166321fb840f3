"""API keys and the projects they belong to: every route is called as a project, or as an admin.

Keys come from a YAML/JSON file (``--api-keys FILE``)::

    keys:
      - {key: sk-team-a-..., project: team-a}
      - {key: sk-ops-..., project: ops, admin: true}

from ``$TAILORED_API_KEYS`` (``KEY=PROJECT,KEY=PROJECT``), and from ``--api-key`` / ``$TAILORED_API_KEY``
(an admin key of the project ``default``). Files, jobs, events, checkpoints and fine-tuned models
belong to the project of the key that made them; another project's ids answer 404. An admin key sees
every project. A server without keys (only allowed on loopback) treats every caller as the admin of
``default``.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from tailored.errors import ConfigError

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Caller:
    project: str
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The project whose objects the caller sees; None (all) for an admin."""
        return None if self.admin else self.project


class Keys:
    def __init__(self, keys: dict[str, Caller]) -> None:
        self._keys = keys

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def caller(self, token: str) -> Caller | None:
        """The caller a bearer token belongs to (compared in constant time), or None."""
        if not self._keys:
            return Caller(DEFAULT_PROJECT, admin=True)
        if not token:  # never matched, whatever the keys (load_keys refuses empty ones)
            return None
        found = None
        for key, caller in self._keys.items():
            if hmac.compare_digest(token.encode(), key.encode()):
                found = caller
        return found


def load_keys(api_key: str | None = None, api_keys: str | None = None) -> Keys:
    """The server's keys from ``--api-key``, ``--api-keys FILE`` and the environment (see the module docstring)."""
    keys: dict[str, Caller] = {}
    if api_key is not None:
        _check_key(api_key, "--api-key", "leave --api-key out for a keyless (local-only) server")
        keys[api_key] = Caller(DEFAULT_PROJECT, admin=True)
    elif "TAILORED_API_KEY" in os.environ:
        _check_key(os.environ["TAILORED_API_KEY"], "$TAILORED_API_KEY", "unset it for a keyless (local-only) server")
        keys[os.environ["TAILORED_API_KEY"]] = Caller(DEFAULT_PROJECT, admin=True)
    for pair in filter(None, (os.environ.get("TAILORED_API_KEYS") or "").split(",")):
        key, sep, project = pair.strip().partition("=")
        if not sep or not key.strip() or not project.strip():
            raise ConfigError(f"$TAILORED_API_KEYS: {pair.strip()!r} is not KEY=PROJECT (neither may be empty)")
        keys[key] = Caller(project.strip())
    if api_keys:
        keys.update(_read_file(Path(api_keys)))
    return Keys(keys)


def _check_key(key: str, where: str, keyless: str) -> None:
    """Refuse an empty (or blank) key: a request sending no key at all would match it."""
    if not key.strip():
        raise ConfigError(f"{where} is empty: a request without any key would match it", hint=keyless)
    if key != key.strip():
        raise ConfigError(f"{where} starts or ends with whitespace, which a client's header cannot carry",
                          hint="remove the spaces (a stray newline from a file or a shell?)")


def _read_file(path: Path) -> dict[str, Caller]:
    if not path.is_file():
        raise ConfigError(f"--api-keys {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--api-keys {path}: not valid YAML/JSON ({exc})") from None
    rows = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ConfigError(f"--api-keys {path}: expected a mapping with a list 'keys' of {{key, project, admin}}")
    out = {}
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("key"), str) or not isinstance(row.get("project"), str):
            raise ConfigError(f"--api-keys {path}: keys[{i}] needs a string 'key' and a string 'project'")
        if not row["key"].strip() or not row["project"].strip():
            raise ConfigError(f"--api-keys {path}: keys[{i}] has an empty 'key' or 'project'",
                              hint="an empty key would let a request without any key in")
        out[row["key"]] = Caller(row["project"], admin=bool(row.get("admin", False)))
    return out
