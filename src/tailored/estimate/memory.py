"""Training memory from first principles: weights + gradients + optimizer states + activations.

Every term is a formula of the model's shape and the settings, so it works for any model given as
a config (nothing is allocated). Assumptions, each checked against measurements in
``bench/estimate_accuracy.py``:

- activations saved per token and layer (eager PyTorch, SDPA attention, no dropout):
  ``4·h + 5·q + 4·kv + 4·I`` elements for a gated MLP (2 norms, q/k/v/rotary/attention outputs,
  gate/up/act/product); eager attention adds ``heads·s`` scores and probabilities per token;
- gradient checkpointing keeps each layer's input and recomputes one layer at a time;
- the loss keeps the logits, an fp32 copy, the log-softmax and its gradient (a chunked loss, as in
  torchtune, keeps the logits and their gradient only);
- what a method trains, adds and quantizes is the method's own answer (``Method.footprint``): QLoRA's
  frozen linear layers take its ``quantized_linear_bits`` (NF4 with double quantization: 4.127 bits per
  weight), embeddings and norms stay at the weights' precision, the adapters in fp32;
- ``dtypes``: ``fp32``; ``mixed`` is what ``tailored train --precision bf16|fp16`` does (fp32 weights,
  gradients and AdamW states, 16-bit activations under autocast); ``bf16`` is pure bf16 training
  (weights and states too, as torchtune does), kept to check against published figures;
- FSDP / ZeRO-3 shard weights, gradients and optimizer states over the devices (plus one gathered
  layer); ZeRO-2 shards gradients and states; ZeRO-1 only states; activations are never sharded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from tailored.config.schema import TrainConfig
from tailored.errors import ConfigError
from tailored.methods.base import Footprint, get_method, method_names, parse_options
from tailored.models.shapes import ModelShape

GIB = 1024**3
DTYPES = ("fp32", "mixed", "bf16")
SHARDING = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp")


def dtypes_for(precision: str, on_cpu: bool) -> str:
    """The memory model's ``dtypes`` for ``tailored train --precision`` (auto: fp32 on CPU, bf16 on CUDA).

    Training always loads the weights in fp32; bf16 and fp16 run the forward pass under autocast.
    """
    if precision == "auto":
        precision = "fp32" if on_cpu else "bf16"
    return "fp32" if precision == "fp32" else "mixed"


@dataclass(frozen=True)
class TrainSetup:
    """What decides the memory of a training step.

    ``method`` and ``options`` are a registered method and its settings (flat names, as for ``tailored
    train``); ``batch_size`` × ``seq_len`` is the largest forward pass on one device (rows × padded
    width), which training's batching derives from ``micro_batch_tokens`` and the data (see
    ``tailored.estimate.plan``); ``dtypes`` is fp32, mixed or bf16 (see the module docstring).
    """

    method: str = "lora"
    options: dict[str, Any] = field(default_factory=dict)
    dtypes: str = "fp32"
    batch_size: int = 1  # rows of the largest forward pass, per device
    seq_len: int = 512  # its padded width
    gradient_checkpointing: bool = False
    attention: str = "sdpa"  # or "eager" (stores the s×s scores)
    target_len: int | None = None  # encoder-decoder models: decoder tokens (default: seq_len)
    chunked_loss: bool = False
    devices: int = 1
    sharding: str = "none"

    def check(self) -> None:
        problems = []
        for name, allowed in (("dtypes", DTYPES), ("sharding", SHARDING)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        for name in ("batch_size", "seq_len", "devices"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be ≥ 1")
        if problems:
            raise ConfigError(problems)


def footprint(shape: ModelShape, setup: TrainSetup) -> Footprint:
    """What ``setup.method`` with ``setup.options`` trains and adds on ``shape`` (the method's own answer)."""
    method = get_method(setup.method)
    return method.footprint(shape, parse_options(method, setup.options))


def with_method(setup: TrainSetup, name: str) -> TrainSetup:
    """``setup`` with another method, keeping the options the two share (lora_r from lora to qlora)."""
    fields = get_method(name).Options.model_fields
    return replace(setup, method=name, options={k: v for k, v in setup.options.items() if k in fields})


@dataclass
class MemoryEstimate:
    """Bytes per device for each term; ``total`` is what the device must hold at the peak."""

    setup: TrainSetup
    trainable: int
    total_params: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    runtime: float = 0.0  # framework/context memory outside the tensors (CPU process, CUDA context)
    gathered: float = 0.0  # of ``weights``: the layer FSDP/ZeRO-3 gathers for its forward/backward (not held at rest)
    notes: list[str] = field(default_factory=list)

    @property
    def tensors(self) -> float:
        """What PyTorch's allocator holds at the peak (comparable to ``max_memory_allocated``)."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    @property
    def held_state(self) -> float:
        """Weights and optimizer states one device holds between steps (its shards): what a run's manifest
        records as ``environment.state_bytes_per_process``."""
        return self.weights - self.gathered + self.optimizer

    @property
    def total(self) -> float:
        return self.tensors + self.runtime

    def to_dict(self) -> dict[str, Any]:
        gib = {k: round(getattr(self, k) / GIB, 3) for k in ("weights", "gradients", "optimizer", "activations", "logits", "runtime")}
        return {"setup": asdict(self.setup), "trainable_params": self.trainable, "total_params": self.total_params,
                "gib": {**gib, "tensors": round(self.tensors / GIB, 3), "total": round(self.total / GIB, 3)}, "notes": self.notes}


def activation_elements_per_token(shape: ModelShape, seq_len: int, attention: str = "sdpa") -> float:
    """Elements one layer saves for backward, per token (see the module docstring)."""
    h, q, kv, inter = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    per = 4 * h + 5 * q + 4 * kv + (4 * inter if shape.gated else 2 * inter)
    if shape.kv_heads < shape.heads:
        per += 2 * q  # repeat_kv expands k and v to every head before attention
    if attention == "eager":
        per += 2 * shape.heads * seq_len
    return per


def _activations(shape: ModelShape, setup: TrainSetup, act_bytes: int) -> tuple[float, float]:
    """(bytes saved for backward over all layers, bytes of one recomputed layer)."""
    b, s = setup.batch_size, setup.seq_len
    per = activation_elements_per_token(shape, s, setup.attention) * act_bytes
    if shape.kind == "t5":  # encoder over the input, decoder (self + cross attention) over the target
        s_dec = setup.target_len or s
        dec = per + (2 * shape.hidden + 3 * shape.q_dim + (2 * shape.heads * s if setup.attention == "eager" else 0)) * act_bytes
        layer_peak = max(per * b * s, dec * b * s_dec)
        if setup.gradient_checkpointing:
            return shape.layers * b * (s + s_dec) * shape.hidden * act_bytes + layer_peak, layer_peak
        return shape.layers * b * (per * s + dec * s_dec), layer_peak
    layer_peak = per * b * s
    if setup.gradient_checkpointing:
        return shape.layers * b * s * shape.hidden * act_bytes, layer_peak
    return shape.layers * layer_peak, layer_peak


def estimate_memory(shape: ModelShape, setup: TrainSetup, *, runtime_bytes: float = 0.0) -> MemoryEstimate:
    """Peak training memory per device (AdamW, as ``tailored train`` uses).

    Args:
        shape: the model's shape.
        setup: method and options, dtypes, the largest forward pass, checkpointing, devices and sharding.
        runtime_bytes: memory outside PyTorch tensors (e.g. the Python process on CPU, the CUDA context).
    """
    setup.check()
    fp = footprint(shape, setup)
    n, t = shape.n_params, fp.trainable
    act_bytes = 4 if setup.dtypes == "fp32" else 2
    param_bytes = 2 if setup.dtypes == "bf16" else 4
    notes = []
    if fp.quantized_linear_bits is not None:
        weights = shape.linear_params * fp.quantized_linear_bits / 8 + (n - shape.linear_params) * param_bytes + fp.added * 4
        train_bytes = 4
        notes.append(f"{setup.method}: linear layers in {fp.quantized_linear_bits:g} bits, embeddings/norms "
                     f"{'bf16' if param_bytes == 2 else 'fp32'}, adapters fp32")
    else:
        weights, train_bytes = (n + fp.added) * param_bytes, param_bytes
    gradients = t * train_bytes
    optimizer = t * 2 * (4 if setup.dtypes != "bf16" else 2)  # AdamW: two states per trained weight
    if setup.dtypes == "mixed" and fp.trains_base:
        weights += n * 2  # autocast keeps a 16-bit copy of every trainable weight during the step
        notes.append("mixed precision: fp32 master weights plus 16-bit copies during the step")
    # Sharding: what each device keeps of the model state.
    d = max(1, setup.devices)
    gathered = 0.0
    if d > 1 and setup.sharding in ("zero3", "fsdp"):
        gathered = max(i * o for i, o, _ in shape.linear_shapes().values()) * 7 * param_bytes  # ≈ one layer, gathered
        weights = weights / d + gathered
        gradients, optimizer = gradients / d, optimizer / d
    elif d > 1 and setup.sharding == "zero2":
        gradients, optimizer = gradients / d, optimizer / d
    elif d > 1 and setup.sharding == "zero1":
        optimizer = optimizer / d
    tokens = setup.batch_size * setup.seq_len
    saved, layer_peak = _activations(shape, setup, act_bytes)
    vocab_tokens = setup.batch_size * (setup.target_len or setup.seq_len if shape.kind == "t5" else setup.seq_len) * shape.vocab
    if setup.chunked_loss:  # bf16 logits, one fp32 chunk at a time (torchtune's CEWithChunkedOutputLoss, 8 chunks)
        logits = vocab_tokens * (act_bytes + 4 * 2 / 8)
    else:  # logits, their fp32 copy (or the fp32 logits again), log-softmax and its gradient
        logits = vocab_tokens * (act_bytes + 4 + 4 + 4)
    if setup.gradient_checkpointing:
        # The loss is computed (and freed) before the first layer is recomputed: the two peaks do not add up.
        activations, logits = saved, max(logits, layer_peak)
    else:
        activations = saved
    activations += tokens * shape.hidden * act_bytes * 2  # embedding output and final norm
    if fp.extra_positions:  # virtual tokens: more positions in every layer
        activations *= 1 + fp.extra_positions / setup.seq_len
    return MemoryEstimate(setup, t, n + fp.added, weights, gradients, optimizer, activations, logits, runtime_bytes,
                          gathered, notes)


def _flags(changes: dict[str, Any]) -> str:
    """``tailored train`` flags for changed settings (the flag of a setting is its name with dashes)."""
    out = []
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        out.append(flag if value is True else f"--no-{flag[2:]}" if value is False else f"{flag} {value}")
    return " ".join(out)


def _lighter_methods(config: TrainConfig, shape: ModelShape) -> list[str]:
    """Methods to suggest instead of ``config.method``, asked of the contract (never by name).

    A method that trains the base gives way to the default method (LoRA); then, when the base is not
    quantized yet, the methods that take all of that method's options on a quantized base with the same
    kind of objective (LoRA → QLoRA).
    """
    current = get_method(config.method)
    options = parse_options(current, config.method_options)
    out, start = [], current
    if current.footprint(shape, options).trains_base:
        start = get_method(str(TrainConfig.model_fields["method"].default))
        if start is not current:
            out.append(start.name)
    if current.quantization(options) is None:
        fields, token_loss = set(start.Options.model_fields), current.objective(options) is None
        for name in method_names():
            other = get_method(name)
            defaults = other.Options()
            if (other is not start and fields <= set(other.Options.model_fields) and other.quantization(defaults) is not None
                    and (other.objective(defaults) is None) == token_loss):
                out.append(name)
    return out


def suggestions(config: TrainConfig, shape: ModelShape, setup: TrainSetup, capacity: float,
                memory_of: Callable[[TrainConfig], MemoryEstimate]) -> list[tuple[str, MemoryEstimate]]:
    """Changes of ``tailored train`` settings that would make training fit in ``capacity`` bytes, most conservative first.

    Every change is a setting of :class:`TrainConfig` (or a method's option), so each label is a set of
    flags that ``tailored train`` accepts.

    Args:
        config: the settings that do not fit.
        shape: the model's shape.
        setup: the memory setup ``config`` leads to (its largest forward pass).
        capacity: bytes available on one device.
        memory_of: the memory estimate of a changed config (re-deriving the forward passes from the data).
    """
    changes: list[tuple[dict[str, Any], str]] = []  # (settings, why)
    if not config.gradient_checkpointing:
        changes.append(({"gradient_checkpointing": True}, ""))
    if setup.batch_size > 1:
        changes.append(({"micro_batch_tokens": setup.seq_len}, "one example per forward pass; the step's batch stays"))
    for name in _lighter_methods(config, shape):
        changes.append(({"method": name}, ""))
    if setup.seq_len > 256:
        changes.append(({"max_seq_length": setup.seq_len // 2}, f"longer examples: --overlength {config.overlength}"))
    if setup.dtypes == "fp32":
        changes.append(({"precision": "bf16"}, ""))

    def changed(base: TrainConfig, settings: dict[str, Any]) -> TrainConfig:
        if "method" in settings:
            fields = get_method(settings["method"]).Options.model_fields
            settings = {**settings, "method_options": {k: v for k, v in base.method_options.items() if k in fields}}
        return base.model_copy(update=settings)

    out = []
    for settings, why in changes:
        est = memory_of(changed(config, settings))
        if est.total <= capacity:
            out.append((_flags(settings) + (f" ({why})" if why else ""), est))
    if not out:  # no single change is enough: apply them one after another until it fits
        combined, applied = config, {}
        for settings, _ in changes:
            combined, applied = changed(combined, settings), {**applied, **settings}
            est = memory_of(combined)
            if est.total <= capacity:
                out.append((_flags(applied), est))
                break
    return out
