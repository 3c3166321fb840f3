"""The method contract and registry.

A method turns a freshly loaded base model into a trainable model (``prepare``), saves and loads its
trainable weights in a self-describing folder (``save``/``load``/``load_state``), and merges them into
the base where the maths allows (``merge``). ``Options`` is a pydantic model of its settings; the
field names are the flat setting names used in YAML, on the CLI and in the Python API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ValidationError

from tailored.errors import ConfigError


@runtime_checkable
class Method(Protocol):
    name: ClassVar[str]
    summary: ClassVar[str]  # what it trains, one line
    when: ClassVar[str]  # when to pick it, one line
    mergeable: ClassVar[bool]
    base_learning_rate: ClassVar[float]
    Options: ClassVar[type[BaseModel]]

    def base_load_kwargs(self, options: BaseModel, device: str) -> dict[str, Any]:
        """Extra keyword arguments for loading the base (e.g. a quantization config)."""

    def prepare(self, model: torch.nn.Module, options: BaseModel) -> torch.nn.Module:
        """Wrap/modify a freshly loaded base so exactly the method's parameters require grad."""

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        """Write the trainable weights (safetensors) and their config into ``folder``."""

    def load(self, base: torch.nn.Module, folder: Path, *, trainable: bool = False) -> torch.nn.Module:
        """Attach weights saved by :meth:`save` to a freshly loaded base."""

    def load_state(self, model: torch.nn.Module, folder: Path) -> None:
        """Copy weights saved by :meth:`save` into a model built by :meth:`prepare` (for resume)."""

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        """A plain base model with the trained weights folded in (only when ``mergeable``)."""

    # Optional: ``objective(options) -> Objective`` (see tailored.methods.objective) for a method that
    # trains towards another goal than the next-token loss on labelled tokens (DPO's preference pairs).
    # It then encodes, batches and scores the data itself; the loop calls it without knowing the method.


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method; names must be unique and lower-case, options must not clash with other settings."""
    name = method.name
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is registered twice")
    if name != name.lower() or not name.replace("_", "").isalnum():
        raise ValueError(f"method name {name!r} must be lower-case letters, digits and '_'")
    from tailored.config.schema import TrainConfig

    clash = set(method.Options.model_fields) & set(TrainConfig.model_fields)
    if clash:
        raise ValueError(f"method {name!r}: option(s) {sorted(clash)} clash with general settings")
    _REGISTRY[name] = method
    return method


def method_names() -> list[str]:
    return list(_REGISTRY)


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"method {name!r} is not known", hint=f"choose one of: {', '.join(_REGISTRY)}") from None


def method_fields() -> dict[str, set[str]]:
    """Each method's flat option names (used to route YAML/CLI settings to the right method)."""
    return {name: set(m.Options.model_fields) for name, m in _REGISTRY.items()}


def parse_options(method: Method, options: dict[str, Any]) -> BaseModel:
    """Validate a method's options, naming the bad setting."""
    try:
        return method.Options(**options)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise ConfigError(problems, hint=f"see `tailored methods` for {method.name}'s settings") from None


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
