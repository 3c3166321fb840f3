"""``tailored estimate``: tokens, memory, time and money of a fine-tuning run, before running it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from tailored.config.auto import auto_epochs
from tailored.config.load import load_train_config, read_yaml
from tailored.config.schema import TrainConfig
from tailored.data.check import format_seconds
from tailored.errors import ConfigError
from tailored.estimate.calibrate import matmul_flops, measure_steps, train_flops_per_token
from tailored.estimate.memory import (GIB, MemoryEstimate, TrainSetup, dtypes_for, estimate_memory, footprint,
                                      suggestions, with_method)
from tailored.estimate.plan import DataPlan, DataTokens, largest_pass
from tailored.estimate.prices import device_entry, load_prices
from tailored.estimate.shapes import resolve_shape
from tailored.methods.base import get_method, method_names, method_options, parse_options
from tailored.models.shapes import ModelShape

STRATEGIES = get_args(TrainConfig.model_fields["strategy"].annotation)  # tailored train --strategy

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
# A quantized base is dequantized on every use of each frozen weight: torchtune's table (Llama 3.1 8B,
# one RTX 4090) shows 2413 vs 3083 tokens/s for QLoRA vs LoRA.
QUANTIZED_SPEED = 2413 / 3083


@dataclass
class Estimate:
    model: str
    params: int
    device: str
    devices: int
    config: TrainConfig
    data: DataTokens | None
    epochs: int
    memory: MemoryEstimate
    capacity_bytes: float | None
    per_method: dict[str, float]
    fixes: list[tuple[str, float]]
    per_strategy: dict[str, float]  # memory per device of each strategy over the devices (train's --strategy names)
    flops: float
    throughput: float  # FLOP/s per device
    throughput_source: str
    seconds: float
    money: dict[str, float]
    prices_date: str
    notes: list[str] = field(default_factory=list)

    @property
    def fitting_strategies(self) -> list[str] | None:
        """The strategies (``tailored train --strategy``) whose memory per device fits; None: capacity unknown."""
        if self.capacity_bytes is None:
            return None
        return [k for k, v in self.per_strategy.items() if v <= self.capacity_bytes]

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_bytes is None else self.memory.total <= self.capacity_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "params": self.params, "device": self.device, "devices": self.devices,
            "settings": self.config.model_dump(exclude={"data"} if not self.config.data else set()),
            "data": asdict(self.data) if self.data else None, "epochs": self.epochs,
            "steps": self.data.steps if self.data else None,
            "total_tokens": round(self.data.run_padded_tokens) if self.data else None,
            "memory": self.memory.to_dict(), "capacity_gib": round(self.capacity_bytes / GIB, 2) if self.capacity_bytes else None,
            "fits": self.fits, "memory_by_method_gib": {k: round(v / GIB, 2) for k, v in self.per_method.items()},
            "fixes": [{"change": c, "total_gib": round(b / GIB, 2)} for c, b in self.fixes],
            "memory_by_strategy_gib": {k: round(v / GIB, 2) for k, v in self.per_strategy.items()},
            "strategies_that_fit": self.fitting_strategies,
            "flops": self.flops, "throughput_flops_per_s": self.throughput, "throughput_source": self.throughput_source,
            "seconds": round(self.seconds, 1), "money_usd": self.money, "prices_date": self.prices_date, "notes": self.notes,
        }

    def render(self) -> str:
        m, s, c = self.memory, self.memory.setup, self.config
        out = [f"model {self.model} ({self.params / 1e6:,.0f}M parameters), method {s.method}, precision {c.precision} "
               f"({s.dtypes}), largest forward pass {s.batch_size} × {s.seq_len} tokens per device (micro_batch_tokens "
               f"{c.micro_batch_tokens}, {c.batching}){', gradient checkpointing' if s.gradient_checkpointing else ''}"]
        if self.data:
            d = self.data
            asides = [f"{d.held_out} more held out for validation"] if d.held_out else []
            asides += [f"each prompt listing {d.neighbours} labelled training requests: neighbours"] if d.neighbours else []
            held = f" ({'; '.join(asides)})" if asides else ""
            out.append(f"tokens: {d.examples} examples trained on{held}, {d.tokens:,} tokens per epoch ({d.padded_tokens:,} with padding, "
                       f"{d.trained_tokens:,} trained) × {self.epochs} epochs = {round(d.run_padded_tokens):,} "
                       f"[tokenizer: {d.tokenizer}]")
            out.append(f"steps: {d.steps} of {d.batch_size} examples ({d.passes_per_epoch} forward passes per epoch)")
        where = f"{self.device}" + (f" × {self.devices} ({s.sharding})" if self.devices > 1 else "")
        out.append(f"memory per device on {where}: {m.total / GIB:.2f} GiB = weights {m.weights / GIB:.2f} + gradients "
                   f"{m.gradients / GIB:.2f} + optimizer {m.optimizer / GIB:.2f} + activations {m.activations / GIB:.2f} "
                   f"+ logits/loss {m.logits / GIB:.2f} + process/allocator {m.runtime / GIB:.2f}  ({m.trainable:,} trainable)")
        out.append("  by method: " + ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.per_method.items()) + " GiB")
        if self.devices > 1:
            fit = self.fitting_strategies
            out.append(f"  by strategy over {self.devices} devices: " + ", ".join(
                f"{k} {v / GIB:.2f}" + ("" if fit is None else " (fits)" if k in fit else " (does not fit)")
                for k, v in self.per_strategy.items()) + " GiB")
        if self.fits is None:
            out.append("fits: unknown (no memory size for this device)")
        elif self.fits:
            out.append(f"FITS: {m.total / GIB:.2f} of {self.capacity_bytes / GIB:.1f} GiB")
        else:
            out.append(f"DOES NOT FIT: {m.total / GIB:.2f} GiB needed, {self.capacity_bytes / GIB:.1f} GiB available")
            others = [k for k in self.fitting_strategies or [] if k != s.sharding]
            if others:
                out.append(f"  would fit with --strategy {others[0]} over the same {self.devices} devices: "
                           f"{self.per_strategy[others[0]] / GIB:.2f} GiB")
            for change, total in self.fixes[:5]:
                out.append(f"  would fit with {change}: {total / GIB:.2f} GiB")
            if not self.fixes:
                out.append("  nothing tried fits one device: use more devices (--nproc N --strategy fsdp) or a smaller model")
        if self.flops:
            out.append(f"time: {self.flops:.3g} FLOPs at {self.throughput / 1e9:,.1f} GFLOP/s per device ({self.throughput_source})"
                       f" ≈ {format_seconds(self.seconds)}")
            out.append("money: " + ", ".join(f"{k} ${v:,.2f}" for k, v in self.money.items())
                       + f"  (prices of {self.prices_date}; --prices FILE to change)")
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)



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


def cpu_throughput(shape: ModelShape, folder: Path | None, setup: TrainSetup, calibrate: str,
                   label_share: float = 1.0) -> tuple[float, float, str]:
    """Achieved training FLOP/s and fixed seconds per step on this CPU.

    From Tailored's training step of the setup's method on the model at two sizes (CPU time, so that
    other processes sharing the cores now do not slow the prediction), or a matmul benchmark.
    """
    import torch

    if calibrate in ("auto", "model") and folder is not None and shape.n_params < 2e9:
        trains_base = footprint(shape, setup).trains_base
        points = []
        for seq in sorted({min(32, setup.seq_len), min(128, setup.seq_len)}):
            r = measure_steps(folder, method=setup.method, options=setup.options, batch_size=1, seq_len=seq, steps=3,
                              label_share=label_share)
            flops = train_flops_per_token(shape, seq, trains_base=trains_base, label_share=label_share) * seq
            points.append((flops, r["cpu_seconds_per_step"]))
        rate, fixed = fit_step_time(points)
        threads = torch.get_num_threads()
        return (rate * threads, fixed / threads,
                f"measured: {setup.method} training steps of the model here at 2 sizes (CPU time), {threads} thread(s)")
    if calibrate == "none":
        return 20e9, 0.0, "assumed 20 GFLOP/s (no calibration)"
    rate = matmul_flops() * CPU_MATMUL_EFFICIENCY
    return rate, 0.0, f"matmul benchmark × {CPU_MATMUL_EFFICIENCY} efficiency, {torch.get_num_threads()} thread(s)"


# TrainConfig settings that decide an estimate; `tailored estimate` takes them with train's names and meanings
# (validation and early_stopping_patience: whether `auto` epochs are guarded, so may be more).
ESTIMATE_SETTINGS = ("data", "format", "model", "method", "epochs", "batch_size", "max_steps", "max_seq_length", "overlength",
                     "validation", "early_stopping_patience",
                     "batching", "micro_batch_tokens", "precision", "gradient_checkpointing", "strategy", "nproc", "nnodes")


def estimate_config(settings: dict[str, Any], yaml_path: str | Path | None = None) -> TrainConfig:
    """A TrainConfig from ``tailored train``'s settings (YAML lowest, then ``settings``); ``data`` may be left out."""
    merged = read_yaml(yaml_path) if yaml_path else {}
    merged.update({k: str(v) if isinstance(v, Path) else v for k, v in settings.items() if v is not None})
    merged.setdefault("data", "")  # no data: memory only
    return load_train_config(merged, methods=method_options())


def estimate(
    config: TrainConfig | None = None, options: BaseModel | None = None, *, device: str = "cpu", devices: int | None = None,
    prices: str | Path | None = None, calibrate: str = "auto", utilisation: float | None = None,
    tokenizer: str | None = None, **settings: Any,
) -> Estimate:
    """Estimate a fine-tuning run: tokens, memory per device (and whether it fits), time and money.

    The run is described by the settings of ``tailored train`` (a :class:`TrainConfig` and the method's
    parsed options, or the same settings as keywords: ``model=``, ``method=``, ``batch_size=``,
    ``micro_batch_tokens=``, ``lora_r=`` ...), with the same meanings: ``batch_size`` is examples per
    optimizer step, ``micro_batch_tokens`` bounds the padded tokens of one forward pass, ``precision``
    is train's (auto, fp32, bf16, fp16). Without ``data`` (an empty ``config.data``) only the memory
    is estimated. ``model`` may also be a size (``7b``) or a preset (``llama-3.1-8b``).

    Args:
        config: the run's settings (default: built from ``settings``).
        options: the method's options (default: parsed from ``config.method_options``).
        device: ``cpu`` (this machine, measured) or a GPU name from the price table (``a100-80gb``).
        devices: how many devices share the run (default: the settings' nproc × nnodes); the run's
            ``strategy`` (ddp, fsdp, zero2, zero3, as for ``tailored train``) says how they share it, and
            every strategy's memory per device is reported beside it.
        prices: a YAML file replacing entries of the shipped price table.
        calibrate: auto/model (a few real steps here), matmul, or none (CPU only).
        utilisation: share of the GPU's peak throughput reached (default: from the price table).
        tokenizer: model whose tokenizer counts tokens when ``model`` is a size (default: the embedded one).
    """
    from tailored.models.load import load_tokenizer, local_folder

    if config is None:
        config = estimate_config(settings)
    elif settings:
        raise TypeError(f"estimate() takes a config or settings, not both (got {', '.join(settings)})")
    method = get_method(config.method)
    options = options if options is not None else parse_options(method, config.method_options)
    devices = config.nproc * config.nnodes if devices is None else devices
    if devices < 1:
        raise ConfigError(f"--devices {devices}: must be ≥ 1")
    table = load_prices(prices)
    shape, folder = resolve_shape(config.model)
    dev = device_entry(table, device)
    on_cpu = dev["name"] == "cpu"
    notes: list[str] = []
    plan = None
    if config.data:
        tok_folder = folder or local_folder(tokenizer or "smollm2")
        name = str(tokenizer or (shape.name if folder else "smollm2 (a proxy: pass --tokenizer for the model's own)"))
        plan = DataPlan(config.data, load_tokenizer(tok_folder), name, method, options, format=config.format)
    mode = config.strategy

    def memory(setup: TrainSetup) -> MemoryEstimate:
        return cpu_memory(shape, setup) if on_cpu else estimate_memory(shape, setup, runtime_bytes=GPU_RUNTIME_BYTES)

    def plan_of(cfg: TrainConfig) -> tuple[TrainSetup, DataTokens | None]:
        tokens = plan.tokens(cfg, devices) if plan is not None else None
        rows, width = largest_pass(cfg, devices, tokens)
        setup = TrainSetup(method=cfg.method, options=dict(cfg.method_options) if cfg is not config else options.model_dump(),
                           dtypes=dtypes_for(cfg.precision, on_cpu), batch_size=rows, seq_len=width,
                           gradient_checkpointing=cfg.gradient_checkpointing, devices=devices, sharding=mode)
        return setup, tokens

    setup, tokens = plan_of(config)
    mem = memory(setup)
    capacity = _available_ram() if on_cpu else (dev["memory_gib"] * GIB if dev.get("memory_gib") else None)
    per_method = {m: memory(with_method(setup, m)).total for m in method_names()}
    per_strategy = {k: memory(replace(setup, sharding=k)).total for k in STRATEGIES}
    fixes = []
    if capacity is not None and mem.total > capacity:
        fixes = [(label, est.total) for label, est in
                 suggestions(config, shape, setup, capacity, lambda cfg: memory(plan_of(cfg)[0]))]
    fp = footprint(shape, setup)
    share = tokens.trained_tokens / tokens.padded_tokens if tokens else 1.0
    per_token = train_flops_per_token(shape, setup.seq_len, trains_base=fp.trains_base,
                                      gradient_checkpointing=setup.gradient_checkpointing, label_share=share)
    flops = per_token * (tokens.run_padded_tokens if tokens else 0)
    fixed = 0.0
    if on_cpu and not flops:
        throughput, source = 0.0, "not measured (no --data)"
    elif on_cpu:
        throughput, fixed, source = cpu_throughput(shape, folder, setup, calibrate, share)
    else:
        util = utilisation if utilisation is not None else float(table.get("utilisation", 0.35))
        quantized = fp.quantized_linear_bits is not None
        throughput = dev["tflops"] * 1e12 * util * (QUANTIZED_SPEED if quantized else 1.0)
        source = f"{dev['tflops']} TFLOPS peak × {util:.0%} utilisation" + (
            f" × {QUANTIZED_SPEED:.2f} for dequantizing the {fp.quantized_linear_bits:g}-bit base" if quantized else "")
    steps = tokens.steps if tokens else 0
    seconds = flops / (throughput * devices) + steps * fixed if flops else 0.0
    money: dict[str, float] = {}
    epochs = tokens.epochs if tokens else (config.epochs if config.epochs != "auto" else 1)
    if tokens:
        hours = seconds / 3600 * devices
        money[f"{dev['name']} ({hours:.2f} device-hours)"] = round(hours * float(dev.get("usd_per_hour") or 0), 2)
        # a hosted service trains on the whole file (validation is a file of its own) for its own auto epochs
        examples = tokens.file_examples
        hosted_epochs = auto_epochs(examples) if config.epochs == "auto" else int(config.epochs)
        billed = tokens.file_tokens * hosted_epochs
        for name, row in table.get("hosted", {}).items():
            money[f"hosted {name}"] = round(billed / 1e6 * float(row["usd_per_million_training_tokens"]), 2)
        notes.append(f"hosted prices bill every token of all {examples} examples for {hosted_epochs} epochs"
                     + (" (OpenAI's auto rule)" if config.epochs == "auto" else "")
                     + "; their tokenizers differ slightly from this one")
    if not tokens:
        notes.append("no --data: memory only (tokens, time and money need a data file); the largest forward pass is "
                     "max_seq_length wide with as many rows as micro_batch_tokens allows")
    return Estimate(shape.name, shape.n_params, dev["name"], devices, config, tokens, epochs, mem, capacity, per_method, fixes,
                    per_strategy,
                    flops, throughput, source, seconds, money, str(table.get("prices_date", "?")), notes + mem.notes)
