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
- QLoRA stores the frozen linear layers in NF4 with double quantization (4.127 bits per weight);
  embeddings and norms stay in 16 bits;
- FSDP / ZeRO-3 shard weights, gradients and optimizer states over the devices (plus one gathered
  layer); ZeRO-2 shards gradients and states; ZeRO-1 only states; activations are never sharded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tailored.errors import ConfigError
from tailored.models.shapes import ModelShape

GIB = 1024**3
METHODS = ("full", "lora", "qlora", "dora", "ia3", "adapter", "prefix", "prompt")
PRECISIONS = ("fp32", "bf16", "mixed")  # mixed: fp32 weights and optimizer, bf16 activations (autocast)
OPTIMIZERS = ("adamw", "adamw8bit", "sgd")
SHARDING = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp")
NF4_BYTES = 4.127 / 8  # NF4 + double-quantized block scales (QLoRA paper, §2)
ATTN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainSetup:
    """What decides the memory of a training step (one name per setting, as on the command line)."""

    method: str = "lora"
    precision: str = "fp32"
    optimizer: str = "adamw"
    batch_size: int = 1  # per device, per micro-batch
    seq_len: int = 512
    gradient_checkpointing: bool = False
    lora_r: int = 16
    lora_targets: str = "all-linear"  # or a comma list such as q_proj,v_proj
    num_virtual_tokens: int = 20
    bottleneck_size: int = 64
    attention: str = "sdpa"  # or "eager" (stores the s×s scores)
    target_len: int | None = None  # encoder-decoder models: decoder tokens (default: seq_len)
    chunked_loss: bool = False
    devices: int = 1
    sharding: str = "none"

    def check(self) -> None:
        problems = []
        for name, allowed in (("method", METHODS), ("precision", PRECISIONS), ("optimizer", OPTIMIZERS), ("sharding", SHARDING)):
            if getattr(self, name) not in allowed:
                problems.append(f"--{name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        for name in ("batch_size", "seq_len", "devices", "lora_r"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be ≥ 1")
        if problems:
            raise ConfigError(problems)


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
    notes: list[str] = field(default_factory=list)

    @property
    def tensors(self) -> float:
        """What PyTorch's allocator holds at the peak (comparable to ``max_memory_allocated``)."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    @property
    def total(self) -> float:
        return self.tensors + self.runtime

    def to_dict(self) -> dict[str, Any]:
        gib = {k: round(getattr(self, k) / GIB, 3) for k in ("weights", "gradients", "optimizer", "activations", "logits", "runtime")}
        return {"setup": asdict(self.setup), "trainable_params": self.trainable, "total_params": self.total_params,
                "gib": {**gib, "tensors": round(self.tensors / GIB, 3), "total": round(self.total / GIB, 3)}, "notes": self.notes}


def _targets(shape: ModelShape, spec: str) -> dict[str, tuple[int, int, int]]:
    linears = shape.linear_shapes()
    if spec in ("all-linear", "all"):
        return linears
    if spec == "attention":
        return {k: v for k, v in linears.items() if k in ATTN_TARGETS}
    names = {n.strip() for n in spec.split(",") if n.strip()}
    alias = {"output_proj": "o_proj", "out_proj": "o_proj", "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
    names = {alias.get(n, n) for n in names}
    unknown = names - set(linears)
    if unknown:
        raise ConfigError(f"--lora-targets {','.join(sorted(unknown))}: no such projection",
                          hint=f"use all-linear, attention, or some of {', '.join(linears)}")
    return {k: v for k, v in linears.items() if k in names}


def trainable_params(shape: ModelShape, setup: TrainSetup) -> int:
    """How many parameters ``setup.method`` trains on ``shape``."""
    m, L = setup.method, shape.layers
    if m == "full":
        return shape.n_params
    if m in ("lora", "qlora", "dora"):
        extra = sum(o * n for _, o, n in _targets(shape, setup.lora_targets).values()) if m == "dora" else 0
        return sum(setup.lora_r * (i + o) * n for i, o, n in _targets(shape, setup.lora_targets).values()) + extra
    if m == "ia3":
        return L * (2 * shape.kv_dim + shape.intermediate)
    if m == "adapter":
        return L * 2 * (2 * shape.hidden * setup.bottleneck_size + setup.bottleneck_size + shape.hidden)
    if m == "prefix":
        return setup.num_virtual_tokens * 2 * L * shape.kv_dim
    return setup.num_virtual_tokens * shape.hidden  # prompt tuning


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
    """Peak training memory per device.

    Args:
        shape: the model's shape.
        setup: method, precision, optimizer, batch, sequence length, checkpointing, devices and sharding.
        runtime_bytes: memory outside PyTorch tensors (e.g. the Python process on CPU, the CUDA context).
    """
    setup.check()
    n, t = shape.n_params, trainable_params(shape, setup)
    act_bytes = 4 if setup.precision == "fp32" else 2
    param_bytes = 2 if setup.precision == "bf16" else 4
    notes = []
    if setup.method == "qlora":
        weights = shape.linear_params * NF4_BYTES + (n - shape.linear_params) * 2 + t * 4
        train_bytes = 4
        notes.append("QLoRA: linear layers in NF4 (4.127 bits), embeddings/norms bf16, adapters fp32")
    elif setup.method == "full":
        weights, train_bytes = n * param_bytes, param_bytes
    else:
        weights, train_bytes = n * param_bytes + t * param_bytes, param_bytes
    gradients = t * train_bytes
    state_bytes = {"adamw": 2 * (4 if setup.precision != "bf16" else 2), "adamw8bit": 2, "sgd": 0}[setup.optimizer]
    optimizer = t * state_bytes
    if setup.precision == "mixed" and setup.method == "full":
        weights += n * 2  # autocast keeps a bf16 copy of every trainable weight during the step
        notes.append("mixed precision: fp32 master weights plus bf16 copies during the step")
    # Sharding: what each device keeps of the model state.
    d = max(1, setup.devices)
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
    if setup.method in ("prefix", "prompt"):
        activations *= 1 + setup.num_virtual_tokens / setup.seq_len
    return MemoryEstimate(setup, t, n, weights, gradients, optimizer, activations, logits, runtime_bytes, notes)


def suggestions(shape: ModelShape, setup: TrainSetup, capacity: float, memory: Any = None) -> list[tuple[str, MemoryEstimate]]:
    """Changes that would make training fit in ``capacity`` bytes, most conservative first.

    Args:
        shape: the model's shape.
        setup: the settings that do not fit.
        capacity: bytes available on one device.
        memory: ``memory(shape, setup) -> MemoryEstimate`` (default: :func:`estimate_memory`).
    """
    memory = memory or estimate_memory
    options: list[tuple[str, TrainSetup]] = []
    if not setup.gradient_checkpointing:
        options.append(("--gradient-checkpointing", replace(setup, gradient_checkpointing=True)))
    if setup.batch_size > 1:
        options.append((f"--batch-size 1 (with gradient accumulation {setup.batch_size})", replace(setup, batch_size=1)))
    if setup.method == "full":
        options.append(("--method lora", replace(setup, method="lora")))
    if setup.method in ("full", "lora", "dora"):
        options.append(("--method qlora", replace(setup, method="qlora")))
    if setup.optimizer == "adamw":
        options.append(("--optimizer adamw8bit", replace(setup, optimizer="adamw8bit")))
    if setup.seq_len > 256:
        options.append((f"--max-seq-length {setup.seq_len // 2}", replace(setup, seq_len=setup.seq_len // 2)))
    if setup.precision == "fp32":
        options.append(("--precision bf16", replace(setup, precision="bf16")))
    out = []
    for label, alt in options:
        est = memory(shape, alt)
        if est.total <= capacity:
            out.append((label, est))
    if not out:  # no single change is enough: apply them one after another until it fits
        combined, labels = setup, []
        for label, alt in options:
            changed = {k: v for k, v in alt.__dict__.items() if v != getattr(setup, k)}
            combined = replace(combined, **changed)
            labels.append(label.split(" (")[0])
            est = memory(shape, combined)
            if est.total <= capacity:
                out.append((" ".join(labels), est))
                break
    return out
