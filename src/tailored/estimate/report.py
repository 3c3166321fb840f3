"""``tailored estimate``: tokens, memory, time and money of a fine-tuning run, before running it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tailored.data.check import format_seconds
from tailored.errors import ConfigError
from tailored.estimate.calibrate import matmul_flops, measure_steps, train_flops_per_token
from tailored.estimate.memory import GIB, METHODS, MemoryEstimate, TrainSetup, estimate_memory, suggestions
from tailored.estimate.prices import device_entry, load_prices
from tailored.estimate.shapes import resolve_shape
from tailored.models.shapes import ModelShape

# This machine's Python + torch + transformers process before any model is loaded (VmRSS measured by
# bench/estimate_accuracy.py), and what a CUDA context plus allocator slack takes outside the tensors.
CPU_RUNTIME_BYTES = 0.214 * GIB
GPU_RUNTIME_BYTES = 1.0 * GIB
# On CPU the peak RSS exceeds the tensors PyTorch holds (oneDNN/BLAS workspaces, glibc arenas keeping
# freed buffers, fp32 temporaries of eager ops). Fitted on three measured runs of the embedded model
# (LoRA 64 and 1024 tokens, full 64 tokens; bench/estimate_accuracy.py); the held-out runs' errors
# are in docs/data-and-estimate.md. The peak is the larger of the activation phase and the
# optimizer step (whose temporaries scale with the trained weights).
CPU_FIXED_BYTES = 0.215 * GIB
CPU_ACTIVATION_FACTOR = 1.44
CPU_OPTIMIZER_TEMP = 1.3  # × trained weights' bytes during the step
# Training FLOP/s achieved per matmul FLOP/s on this kind of CPU (used when no model run calibrates):
# a 128-token LoRA step of SmolLM2 ran at 49 GFLOP/s where a 512² fp32 matmul ran at 83 (CPU time).
CPU_MATMUL_EFFICIENCY = 0.6
# QLoRA dequantizes every frozen weight on each use: torchtune's table (Llama 3.1 8B, one RTX 4090)
# shows 2413 vs 3083 tokens/s for QLoRA vs LoRA.
QLORA_SPEED = 2413 / 3083


@dataclass
class DataTokens:
    examples: int
    tokens: int  # real tokens per epoch (after truncation to max_seq_length)
    padded_tokens: int  # tokens processed per epoch with batches padded to their longest example
    trained_tokens: int  # assistant tokens that carry a loss
    longest: int
    tokenizer: str


@dataclass
class Estimate:
    model: str
    params: int
    device: str
    devices: int
    data: DataTokens | None
    epochs: int
    memory: MemoryEstimate
    capacity_bytes: float | None
    per_method: dict[str, float]
    fixes: list[tuple[str, float]]
    flops: float
    throughput: float  # FLOP/s per device
    throughput_source: str
    seconds: float
    money: dict[str, float]
    prices_date: str
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_bytes is None else self.memory.total <= self.capacity_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "params": self.params, "device": self.device, "devices": self.devices,
            "data": asdict(self.data) if self.data else None, "epochs": self.epochs,
            "total_tokens": self.data.padded_tokens * self.epochs if self.data else None,
            "memory": self.memory.to_dict(), "capacity_gib": round(self.capacity_bytes / GIB, 2) if self.capacity_bytes else None,
            "fits": self.fits, "memory_by_method_gib": {k: round(v / GIB, 2) for k, v in self.per_method.items()},
            "fixes": [{"change": c, "total_gib": round(b / GIB, 2)} for c, b in self.fixes],
            "flops": self.flops, "throughput_flops_per_s": self.throughput, "throughput_source": self.throughput_source,
            "seconds": round(self.seconds, 1), "money_usd": self.money, "prices_date": self.prices_date, "notes": self.notes,
        }

    def render(self) -> str:
        m, s = self.memory, self.memory.setup
        out = [f"model {self.model} ({self.params / 1e6:,.0f}M parameters), method {s.method}, {s.precision}, "
               f"batch {s.batch_size} × {s.seq_len} tokens{', gradient checkpointing' if s.gradient_checkpointing else ''}"]
        if self.data:
            d = self.data
            out.append(f"tokens: {d.examples} examples, {d.tokens:,} tokens per epoch ({d.padded_tokens:,} with padding, "
                       f"{d.trained_tokens:,} trained) × {self.epochs} epochs = {d.padded_tokens * self.epochs:,} "
                       f"[tokenizer: {d.tokenizer}]")
        where = f"{self.device}" + (f" × {self.devices} ({s.sharding})" if self.devices > 1 else "")
        out.append(f"memory per device on {where}: {m.total / GIB:.2f} GiB = weights {m.weights / GIB:.2f} + gradients "
                   f"{m.gradients / GIB:.2f} + optimizer {m.optimizer / GIB:.2f} + activations {m.activations / GIB:.2f} "
                   f"+ logits/loss {m.logits / GIB:.2f} + process/allocator {m.runtime / GIB:.2f}  ({m.trainable:,} trainable)")
        out.append("  by method: " + ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.per_method.items()) + " GiB")
        if self.fits is None:
            out.append("fits: unknown (no memory size for this device)")
        elif self.fits:
            out.append(f"FITS: {m.total / GIB:.2f} of {self.capacity_bytes / GIB:.1f} GiB")
        else:
            out.append(f"DOES NOT FIT: {m.total / GIB:.2f} GiB needed, {self.capacity_bytes / GIB:.1f} GiB available")
            for change, total in self.fixes[:5]:
                out.append(f"  would fit with {change}: {total / GIB:.2f} GiB")
            if not self.fixes:
                out.append("  nothing tried fits one device: use more devices (--devices N --sharding fsdp) or a smaller model")
        if self.flops:
            out.append(f"time: {self.flops:.3g} FLOPs at {self.throughput / 1e9:,.1f} GFLOP/s per device ({self.throughput_source})"
                       f" ≈ {format_seconds(self.seconds)}")
            out.append("money: " + ", ".join(f"{k} ${v:,.2f}" for k, v in self.money.items())
                       + f"  (prices of {self.prices_date}; --prices FILE to change)")
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)



def count_tokens(path: str | Path, tokenizer: Any, *, max_seq_length: int, batch_size: int, name: str) -> DataTokens:
    """Token counts of a data file through the model's chat template (padding simulated per batch)."""
    from tailored.data.readers import read_records
    from tailored.data.tokenize import encode_example

    read = read_records(path)
    if not read.examples:
        raise ConfigError(f"--data {path}: no valid examples", hint="run `tailored data check` on it")
    encoded = [encode_example(tokenizer, ex) for ex in read.examples]
    lengths = [min(len(e), max_seq_length) for e in encoded]
    padded = sum(len(lengths[i : i + batch_size]) * max(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size))
    trained = sum(e.n_labels for e in encoded)
    return DataTokens(len(encoded), sum(lengths), padded, trained, max(lengths), name)


def _available_ram() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def cpu_memory(shape: ModelShape, setup: TrainSetup) -> MemoryEstimate:
    """The memory estimate for this CPU: tensors plus the measured process and allocator overheads."""
    est = estimate_memory(shape, setup, runtime_bytes=CPU_RUNTIME_BYTES)
    working = est.activations + est.logits
    peak_working = max(CPU_FIXED_BYTES + CPU_ACTIVATION_FACTOR * working, CPU_OPTIMIZER_TEMP * est.trainable * 4)
    return replace(est, runtime=est.runtime + peak_working - working)


def fit_step_time(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(FLOP/s, seconds of fixed cost per step) from (FLOPs, seconds) of two or more measured steps.

    A step costs a fixed part (optimizer update, Python, small-kernel overhead) plus FLOPs at a steady
    rate; one measured size alone would fold the fixed part into the rate and misjudge other sizes.
    """
    if len(points) == 1:
        return points[0][0] / points[0][1], 0.0
    (f1, t1), (f2, t2) = sorted(points)[0], sorted(points)[-1]
    slope = (t2 - t1) / (f2 - f1) if f2 > f1 else 0.0
    if slope <= 0:
        return f2 / t2, 0.0
    return 1.0 / slope, max(0.0, t1 - f1 * slope)


def cpu_throughput(shape: ModelShape, folder: Path | None, setup: TrainSetup, calibrate: str) -> tuple[float, float, str]:
    """Achieved training FLOP/s and fixed seconds per step on this CPU.

    From real steps of the model at two sizes (CPU time, so that other processes sharing the cores
    now do not slow the prediction), or a matmul benchmark.
    """
    import torch

    if calibrate in ("auto", "model") and folder is not None and shape.n_params < 2e9:
        kind = "full" if setup.method == "full" else "lora"
        points = []
        for seq in sorted({min(32, setup.seq_len), min(128, setup.seq_len)}):
            r = measure_steps(folder, method=kind, batch_size=1, seq_len=seq, steps=3)
            points.append((train_flops_per_token(shape, kind, seq) * seq, r["cpu_seconds_per_step"]))
        rate, fixed = fit_step_time(points)
        threads = torch.get_num_threads()
        return rate * threads, fixed / threads, f"measured: training steps of the model here at 2 sizes (CPU time), {threads} thread(s)"
    if calibrate == "none":
        return 20e9, 0.0, "assumed 20 GFLOP/s (no calibration)"
    rate = matmul_flops() * CPU_MATMUL_EFFICIENCY
    return rate, 0.0, f"matmul benchmark × {CPU_MATMUL_EFFICIENCY} efficiency, {torch.get_num_threads()} thread(s)"


def estimate(
    *, model: str = "smollm2", data: str | Path | None = None, method: str = "lora", epochs: int | None = None,
    device: str = "cpu", devices: int = 1, sharding: str = "auto", batch_size: int = 1, max_seq_length: int = 1024,
    gradient_checkpointing: bool = False, precision: str = "auto", optimizer: str = "adamw", lora_r: int = 16,
    lora_targets: str = "all-linear", prices: str | Path | None = None, calibrate: str = "auto",
    utilisation: float | None = None, tokenizer: str | None = None,
) -> Estimate:
    """Estimate a fine-tuning run: tokens, memory per device (and whether it fits), time and money.

    Args:
        model: a size (``7b``), a preset (``llama-3.1-8b``), a model folder, or ``smollm2``.
        data: a training file; without it, tokens/time/money are left out.
        method: one of full, lora, qlora, dora, ia3, adapter, prefix, prompt.
        epochs: passes over the data (default: the auto rule from the number of examples).
        device: ``cpu`` (this machine, measured) or a GPU name from the price table (``a100-80gb``).
        devices: how many devices share the run.
        sharding: none, ddp, zero1, zero2, zero3, fsdp (auto: fsdp when devices > 1).
        batch_size: sequences per device per micro-batch.
        max_seq_length: longest example in tokens (the memory peak is the longest batch).
        gradient_checkpointing: recompute activations in the backward pass.
        precision: fp32, bf16 or mixed (auto: fp32 on CPU, bf16 on GPUs).
        optimizer: adamw, adamw8bit or sgd.
        lora_r: LoRA rank (lora, qlora, dora).
        lora_targets: all-linear, attention, or names such as q_proj,v_proj.
        prices: a YAML file replacing entries of the shipped price table.
        calibrate: auto/model (a few real steps here), matmul, or none (CPU only).
        utilisation: share of the GPU's peak throughput reached (default: from the price table).
        tokenizer: model whose tokenizer counts tokens when ``model`` is a size (default: the embedded one).
    """
    from tailored.config.auto import auto_epochs
    from tailored.models.load import load_tokenizer, local_folder

    table = load_prices(prices)
    shape, folder = resolve_shape(model)
    dev = device_entry(table, device)
    on_cpu = dev["name"] == "cpu"
    notes: list[str] = []
    tokens = None
    if data is not None:
        tok_folder = folder or local_folder(tokenizer or "smollm2")
        name = str(tokenizer or (shape.name if folder else "smollm2 (a proxy: pass --tokenizer for the model's own)"))
        tokens = count_tokens(data, load_tokenizer(tok_folder), max_seq_length=max_seq_length, batch_size=batch_size, name=name)
    n_epochs = epochs or (auto_epochs(tokens.examples) if tokens else 1)
    seq_len = min(max_seq_length, tokens.longest) if tokens else max_seq_length
    setup = TrainSetup(method=method, precision=precision if precision != "auto" else ("fp32" if on_cpu else "bf16"),
                       optimizer=optimizer, batch_size=batch_size, seq_len=seq_len, gradient_checkpointing=gradient_checkpointing,
                       lora_r=lora_r, lora_targets=lora_targets, devices=devices,
                       sharding=sharding if sharding != "auto" else ("fsdp" if devices > 1 else "none"))
    def memory(shape: ModelShape, setup: TrainSetup) -> MemoryEstimate:
        return cpu_memory(shape, setup) if on_cpu else estimate_memory(shape, setup, runtime_bytes=GPU_RUNTIME_BYTES)

    mem = memory(shape, setup)
    capacity = _available_ram() if on_cpu else (dev["memory_gib"] * GIB if dev.get("memory_gib") else None)
    per_method = {m: memory(shape, replace(setup, method=m)).total for m in METHODS}
    fixes = []
    if capacity is not None and mem.total > capacity:
        fixes = [(label, est.total) for label, est in suggestions(shape, setup, capacity, memory)]
    per_token = train_flops_per_token(shape, method, seq_len, gradient_checkpointing)
    flops = per_token * (tokens.padded_tokens * n_epochs if tokens else 0)
    fixed = 0.0
    if on_cpu and not flops:
        throughput, source = 0.0, "not measured (no --data)"
    elif on_cpu:
        throughput, fixed, source = cpu_throughput(shape, folder, setup, calibrate)
    else:
        util = utilisation if utilisation is not None else float(table.get("utilisation", 0.35))
        throughput = dev["tflops"] * 1e12 * util * (QLORA_SPEED if method == "qlora" else 1.0)
        source = f"{dev['tflops']} TFLOPS peak × {util:.0%} utilisation" + (" × QLoRA dequantization cost" if method == "qlora" else "")
    steps = -(-tokens.examples // (batch_size * max(1, devices))) * n_epochs if tokens else 0
    seconds = flops / (throughput * max(1, devices)) + steps * fixed if flops else 0.0
    money: dict[str, float] = {}
    if tokens:
        hours = seconds / 3600 * max(1, devices)
        money[f"{dev['name']} ({hours:.2f} device-hours)"] = round(hours * float(dev.get("usd_per_hour") or 0), 2)
        billed = tokens.tokens * n_epochs
        for name, row in table.get("hosted", {}).items():
            money[f"hosted {name}"] = round(billed / 1e6 * float(row["usd_per_million_training_tokens"]), 2)
        notes.append("hosted prices count every token of every example per epoch; their tokenizers differ slightly from this one")
    if not tokens:
        notes.append("no --data: memory only (tokens, time and money need a data file)")
    return Estimate(shape.name, shape.n_params, dev["name"], devices, tokens, n_epochs, mem, capacity, per_method, fixes,
                    flops, throughput, source, seconds, money, str(table.get("prices_date", "?")), notes + mem.notes)
