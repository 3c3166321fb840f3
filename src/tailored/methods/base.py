"""The method contract and registry.

A method turns a freshly loaded base model into a trainable model (``prepare``), saves and loads its
trainable weights in a self-describing folder (``save``/``load``/``load_state``), and merges them into
the base where the maths allows (``merge``). ``Options`` is a pydantic model of its settings; the
field names are the flat setting names used in YAML, on the CLI and in the Python API.

Everything other layers need to know about a method they ask the contract (never its name): whether
the base is loaded quantized (``quantization``), how a run is served (``serving``), whether and why not
it merges (``merge_refusal``), what its weights folder holds (``weights_format``), what it trains
towards (``objective``) and what it trains and adds on a model of a given shape (``footprint``, which
``tailored methods`` and ``tailored estimate`` report). :class:`MethodBase` gives the defaults; a
plug-in overrides what differs and always states its own ``footprint``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

import torch
from pydantic import BaseModel, ValidationError

from tailored.errors import ConfigError, TailoredError
from tailored.models.shapes import ModelShape

WeightsFormat = Literal["peft", "model", "custom"]  # a peft adapter folder, a whole transformers model, the method's own
ServingMode = Literal["shared_lora", "standalone", "unservable"]
TrainsOn = Literal["chat", "preference"]


@dataclass(frozen=True)
class Serving:
    """How a server runs a finished run of this method.

    ``shared_lora``: a plain LoRA on the server's one shared base, batched with other adapters;
    ``standalone``: the run loaded on its own (``load_run``); ``unservable``: not by the server, and
    ``reason`` says why and what to use instead.
    """

    mode: ServingMode
    reason: str = ""


@dataclass(frozen=True)
class Footprint:
    """What a method trains and adds on a model of a given shape, with given options (no weights needed).

    ``trainable``: parameters that require grad after ``prepare``; ``added``: parameters ``prepare`` adds
    to the base (adapters, virtual tokens); ``quantized_linear_bits``: bits per frozen weight of the
    blocks' linear layers when the base is loaded quantized (NF4 with double quantization ≈ 4.127,
    LLM.int8 = 8), None at full precision; ``extra_positions``: sequence positions the method adds to
    every forward pass (virtual tokens); ``trains_base``: whether the base's own weights are trained.
    """

    trainable: int
    added: int
    quantized_linear_bits: float | None = None
    extra_positions: int = 0
    trains_base: bool = False


# A small shape on which register() checks every method's footprint (Llama-like, grouped-query attention).
_CHECK_SHAPE = ModelShape("contract-check", hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128,
                          vocab=256, tied=True)


@runtime_checkable
class Method(Protocol):
    name: ClassVar[str]
    summary: ClassVar[str]  # what it trains, one line
    when: ClassVar[str]  # when to pick it, one line
    base_learning_rate: ClassVar[float]
    Options: ClassVar[type[BaseModel]]
    merge_refusal: ClassVar[str | None]  # why the weights cannot be merged into the base; None: they can
    weights_format: ClassVar[WeightsFormat]
    trains_on: ClassVar[TrainsOn]  # the examples it learns from: chat conversations or preference pairs

    @property
    def mergeable(self) -> bool:
        """Whether :meth:`merge` folds the weights into a plain base model."""

    def quantization(self, options: BaseModel) -> str | None:
        """How the base is loaded for training and serving ("4-bit nf4", "8-bit"), or None for full precision."""

    def base_load_kwargs(self, options: BaseModel, device: str) -> dict[str, Any]:
        """Extra keyword arguments for loading the base (e.g. a quantization config)."""

    def serving(self, options: BaseModel) -> Serving:
        """How a server runs a finished run."""

    def objective(self, options: BaseModel) -> Any:
        """None for the next-token loss on labelled tokens; else an ``Objective`` (see tailored.methods.objective)
        that encodes, batches and scores the data itself (DPO's preference pairs)."""

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        """What :meth:`prepare` with ``options`` trains and adds on a model of this ``shape`` (exact counts)."""

    def prepare(self, model: torch.nn.Module, options: BaseModel) -> torch.nn.Module:
        """Wrap/modify a freshly loaded base so exactly the method's parameters require grad."""

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        """Write the trainable weights (safetensors) and their config into ``folder``."""

    def load(self, base: torch.nn.Module, folder: Path, *, trainable: bool = False) -> torch.nn.Module:
        """Attach weights saved by :meth:`save` to a freshly loaded base."""

    def load_state(self, model: torch.nn.Module, folder: Path) -> None:
        """Copy weights saved by :meth:`save` into a model built by :meth:`prepare` (for resume)."""

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        """A plain base model with the trained weights folded in; raises ``merge_refusal`` when it cannot."""


def refuse_merge(method: str, why: str) -> TailoredError:
    return TailoredError(
        f"{method} cannot be merged into the base: {why}",
        hint=f"serve or export the run folder as it is ({method} weights are loaded on top of the base by "
             "method.load / `tailored chat RUN`); train with --method lora if you need one merged model",
    )


class MethodBase:
    """The contract's defaults: full-precision base, served standalone, mergeable, token-loss objective.

    There is no default ``footprint``: what a method trains is the method's own to state.
    """

    merge_refusal: ClassVar[str | None] = None
    weights_format: ClassVar[WeightsFormat] = "custom"
    trains_on: ClassVar[TrainsOn] = "chat"

    @property
    def mergeable(self) -> bool:
        return self.merge_refusal is None

    def quantization(self, options: BaseModel) -> str | None:
        return None

    def base_load_kwargs(self, options: BaseModel, device: str) -> dict[str, Any]:
        return {}

    def serving(self, options: BaseModel) -> Serving:
        return Serving("standalone")

    def objective(self, options: BaseModel) -> Any:
        return None

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        raise refuse_merge(self.name, self.merge_refusal or "it defines no merge")  # type: ignore[attr-defined]


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method after checking it against the contract.

    Names must be unique and lower-case, options must not clash with other settings, and the declared
    answers (serving, merge, weights format, footprint) must be consistent for the default options.
    """
    name = getattr(method, "name", None)
    if not isinstance(method, Method):
        missing = [a for a in _CONTRACT if not hasattr(method, a)]
        raise ValueError(f"method {name!r} does not implement the method contract (missing {', '.join(missing)}); "
                         "subclass tailored.methods.base.MethodBase")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is registered twice")
    if name != name.lower() or not name.replace("_", "").isalnum():
        raise ValueError(f"method name {name!r} must be lower-case letters, digits and '_'")
    if not (isinstance(method.Options, type) and issubclass(method.Options, BaseModel)):
        raise ValueError(f"method {name!r}: Options must be a pydantic model")
    if method.weights_format not in get_args(WeightsFormat):
        raise ValueError(f"method {name!r}: weights_format must be one of {get_args(WeightsFormat)}")
    if method.trains_on not in get_args(TrainsOn):
        raise ValueError(f"method {name!r}: trains_on must be one of {get_args(TrainsOn)}")
    if not method.base_learning_rate > 0:
        raise ValueError(f"method {name!r}: base_learning_rate must be positive")
    serving = method.serving(method.Options())
    if not isinstance(serving, Serving) or serving.mode not in get_args(ServingMode):
        raise ValueError(f"method {name!r}: serving() must return a Serving")
    if serving.mode == "unservable" and not serving.reason:
        raise ValueError(f"method {name!r}: an unservable method must say why (Serving.reason)")
    if serving.mode == "shared_lora" and method.weights_format != "peft":
        raise ValueError(f"method {name!r}: shared-base LoRA serving needs peft weights")
    _check_footprint(method)
    from tailored.config.schema import TrainConfig

    clash = set(method.Options.model_fields) & set(TrainConfig.model_fields)
    if clash:
        raise ValueError(f"method {name!r}: option(s) {sorted(clash)} clash with general settings")
    _REGISTRY[name] = method
    return method


def _check_footprint(method: Method) -> None:
    """The footprint of the default options on a small shape is well-formed and agrees with ``quantization``."""
    name, options = method.name, method.Options()
    fp = method.footprint(_CHECK_SHAPE, options)
    if not isinstance(fp, Footprint):
        raise ValueError(f"method {name!r}: footprint() must return a Footprint")
    counts = (fp.trainable, fp.added, fp.extra_positions)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts) or fp.trainable < 1:
        raise ValueError(f"method {name!r}: footprint counts must be integers ≥ 0 and something must be trained, got {fp}")
    if not fp.trains_base and fp.trainable > fp.added:
        raise ValueError(f"method {name!r}: footprint trains {fp.trainable} parameters but adds only {fp.added} "
                         "and does not train the base")
    bits = fp.quantized_linear_bits
    if bits is not None and not 0 < bits < 16:
        raise ValueError(f"method {name!r}: quantized_linear_bits must be between 0 and 16, got {bits}")
    if (bits is None) != (method.quantization(options) is None):
        raise ValueError(f"method {name!r}: footprint().quantized_linear_bits ({bits}) disagrees with quantization() "
                         f"({method.quantization(options)!r})")


_CONTRACT = ("name", "summary", "when", "base_learning_rate", "Options", "merge_refusal", "weights_format", "trains_on",
             "mergeable",
             "quantization", "base_load_kwargs", "serving", "objective", "footprint", "prepare", "save", "load",
             "load_state", "merge")


def method_names() -> list[str]:
    return list(_REGISTRY)


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        raise ConfigError(f"method {name!r} is not known" + (f" (did you mean {close[0]!r}?)" if close else ""),
                          hint=f"choose one of: {', '.join(_REGISTRY)}") from None


def default_method(trains_on: TrainsOn = "chat") -> str:
    """The method trained when none is named: TrainConfig's default for chat data, the first preference method else."""
    from tailored.config.schema import TrainConfig

    default = str(TrainConfig.model_fields["method"].default)
    if _REGISTRY[default].trains_on == trains_on:
        return default
    found = [name for name, m in _REGISTRY.items() if m.trains_on == trains_on]
    if not found:
        raise ConfigError(f"no registered method trains on {trains_on} data")
    return found[0]


def method_options() -> dict[str, type[BaseModel]]:
    """Each method's options model (the config layer routes and validates flat settings with them)."""
    return {name: m.Options for name, m in _REGISTRY.items()}


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
