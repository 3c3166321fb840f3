"""How the processes of a run share the model: ``ddp``, ``fsdp`` (torch FSDP2) or ``zero2``/``zero3`` (DeepSpeed).

The training loop talks to one :class:`Engine` whatever the strategy: the part of accelerate's
``Accelerator`` it uses (ranks, device, ``reduce``, ``backward``, ``no_sync``, ``clip_grad_norm_``,
``wait_for_everyone``) plus what sharding adds: the full weights gathered for saving
(:meth:`Engine.full_state_dict`) and the optimizer state of a checkpoint.

``ddp`` is accelerate's (DDP under torchrun, plain in one process). ``fsdp`` and ``zero*`` call the
engines themselves: torch's ``fully_shard`` (what accelerate's FSDP2 plugin calls) and
``deepspeed.initialize``, because accelerate 1.15 drops both plugins on CPU (``state.py`` sets the
FSDP type only for GPU-like distributed types and DeepSpeed only ``and not cpu``) and Tailored must run
and be tested on CPU. Nothing here shards anything by itself. The settings are checked against what
each strategy supports (:mod:`tailored.train.engines` builds the engines' configs).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from tailored.config.schema import TrainConfig
from tailored.errors import ConfigError
from tailored.train.engines import deepspeed_config, fsdp_settings

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
SHARDED = ("fsdp", "zero2", "zero3")


def uses_cuda(cfg: TrainConfig) -> bool:
    return torch.cuda.is_available() and cfg.device != "cpu"


def check_strategy(cfg: TrainConfig, quantization: str | None, cuda: bool) -> list[str]:
    """Problems of the scale-out settings for this machine (empty: they work together)."""
    problems = []
    s = cfg.strategy
    if cfg.cpu_offload and s == "ddp":
        problems.append("cpu_offload: ddp keeps a whole copy on every device; offloading needs strategy fsdp, zero2 or zero3")
    elif cfg.cpu_offload and not cuda:
        problems.append("cpu_offload: the run is on the CPU already (it moves GPU memory to the CPU); leave it off here")
    if quantization and s in SHARDED and not cuda:
        problems.append(f"strategy {s} with a quantized base ({quantization}) needs CUDA: bitsandbytes stores the 4-bit "
                        "weights in bf16 there so that FSDP/ZeRO can shard them; on CPU train this method with strategy "
                        "ddp, or use method lora with the sharded strategy")
    if cfg.strategy_config and s == "ddp":
        problems.append("strategy_config: ddp takes no engine config; it is for fsdp (accelerate YAML) or zero2/zero3 "
                        "(DeepSpeed JSON)")
    if cfg.node_rank >= cfg.nnodes:
        problems.append(f"node_rank {cfg.node_rank}: must be below nnodes ({cfg.nnodes})")
    if cfg.precision == "fp16" and not cuda and s != "ddp":
        problems.append(f"precision fp16: {s} on CPU trains in fp32 or bf16")
    if s in ("zero2", "zero3"):
        try:
            import deepspeed  # noqa: F401  (DS_ACCELERATOR is set by make_engine before this import)
        except ImportError:
            problems.append(f"strategy {s} needs DeepSpeed: pip install 'tailored[deepspeed]'")
    return problems


def make_engine(cfg: TrainConfig, quantization: str | None = None) -> Engine:
    """The run's engine: checks the settings, joins the processes (under torchrun) and picks the device."""
    from accelerate import Accelerator

    cuda = uses_cuda(cfg)
    if cfg.strategy in ("zero2", "zero3"):
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
    problems = check_strategy(cfg, quantization, cuda)
    if problems:
        raise ConfigError(problems, hint="see docs/distributed.md for what each strategy supports")
    if cfg.strategy in SHARDED and "WORLD_SIZE" not in os.environ:
        raise ConfigError(f"strategy {cfg.strategy} runs its processes under torchrun",
                          hint=f"start it with `tailored train --strategy {cfg.strategy} --nproc N ...` (N ≥ 1), which "
                               "launches torchrun itself")
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if cuda else "fp32")
    if cfg.strategy == "ddp":
        return Engine(Accelerator(cpu=not cuda, mixed_precision="no" if precision == "fp32" else precision), cfg, precision)
    accelerator = Accelerator(cpu=not cuda, mixed_precision="no")  # the engine itself casts (FSDP2 policy, DeepSpeed bf16)
    kind = FsdpEngine if cfg.strategy == "fsdp" else DeepSpeedEngine
    return kind(accelerator, cfg, precision)


class Engine:
    """ddp: accelerate's Accelerator as it is; the sharded strategies override what differs."""

    sharded_optimizer = False  # each process saves its own optimizer state (resume needs the same world size)

    def __init__(self, accelerator: Any, cfg: TrainConfig, precision: str) -> None:
        self.accelerator, self.cfg, self.precision = accelerator, cfg, precision
        self.strategy = cfg.strategy
        self.engine_config: dict[str, Any] = {}  # what the engine was configured with (recorded in the manifest)

    def __getattr__(self, name: str) -> Any:  # process_index, device, reduce, backward, wait_for_everyone, ...
        return getattr(self.accelerator, name)

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        return self.accelerator.prepare(model, optimizer)

    def unwrap_model(self, model: Any) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)

    def full_state_dict(self, model: Any) -> dict[str, torch.Tensor] | None:
        """Every process calls it; the full weights on the main process when they are sharded, else None."""
        return None

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        """Every process calls it; the optimizer's whole state (the main process saves it)."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: Any, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    def state_bytes(self, model: Any, optimizer: Any) -> int:
        """Bytes of weights and optimizer states this process holds (its shards only), for the manifest."""
        def local(t: torch.Tensor) -> int:
            t = getattr(t, "ds_tensor", None) if getattr(t, "ds_tensor", None) is not None else t
            t = t.to_local() if hasattr(t, "to_local") else t
            return t.numel() * t.element_size()

        base = getattr(self, "_base_optimizer", None) or getattr(optimizer, "optimizer", optimizer)
        weights = sum(local(p) for p in self.unwrap_model(model).parameters())
        states = sum(local(v) for st in base.state.values() for v in st.values() if isinstance(v, torch.Tensor) and v.dim())
        return int(weights + states)


@contextmanager
def weights_from(model: torch.nn.Module, state: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """While a method saves ``model``, its ``state_dict()`` answers with ``state`` (the gathered full weights).

    A method's ``save`` reads the weights through ``model.state_dict()`` (peft's and transformers'
    ``save_pretrained`` do), so the files written from sharded parameters are those of an unsharded run.
    """
    if state is None:
        yield
        return
    model.state_dict = lambda *args, **kwargs: state  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model.state_dict


class FsdpEngine(Engine):
    """torch FSDP2: ``fully_shard`` on every transformer block, then on the whole model."""

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        settings = fsdp_settings(self.cfg, self.precision)
        self.engine_config = settings
        kwargs: dict[str, Any] = {"mesh": init_device_mesh(self.device.type, (self.num_processes,)),
                                  "reshard_after_forward": settings["reshard_after_forward"]}
        if settings["param_dtype"] != "float32":
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=getattr(torch, settings["param_dtype"]),
                                                       reduce_dtype=torch.float32)
        if settings["offload_params"]:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        names = {id(p): n for n, p in model.named_parameters()}
        blocks = _block_classes(model)
        for module in list(model.modules()):
            if type(module).__name__ in blocks:
                fully_shard(module, **kwargs)
        # the root (embeddings, final norm, head) stays gathered from its forward to its backward: the loss
        # calls the head on the labelled positions only, after the model's forward (train/forward.py)
        fully_shard(model, **{**kwargs, "reshard_after_forward": False})
        # fully_shard replaces each parameter by a sharded one: the optimizer (and its schedule) keep their
        # groups and settings and now update the shards
        new = dict(model.named_parameters())
        for group in optimizer.param_groups:
            group["params"] = [new[names[id(p)]] for p in group["params"]]
        self._model = model
        return model, optimizer

    def unwrap_model(self, model: Any) -> torch.nn.Module:
        return model

    @contextmanager
    def no_sync(self, model: Any) -> Iterator[None]:
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    def clip_grad_norm_(self, parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def full_state_dict(self, model: Any) -> dict[str, torch.Tensor] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.is_main_process else None

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        """The whole optimizer state keyed by parameter name (so any world size can resume it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self._model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, optimizer: Any, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self._model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _block_classes(model: torch.nn.Module) -> set[str]:
    """The transformer block classes of a transformers model (its ``_no_split_modules``), also under peft."""
    for module in model.modules():
        found = getattr(module, "_no_split_modules", None)
        if found:
            return set(found)
    return set()


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO-2/3 with Tailored's own AdamW and schedule; each process saves its optimizer partition."""

    sharded_optimizer = True

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        import deepspeed

        self.engine_config = deepspeed_config(self.cfg, self.precision, self.num_processes)
        deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo", auto_mpi_discovery=False)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.engine_config)
        self._engine, self._base_optimizer = engine, optimizer
        return engine, _Steps(engine, optimizer)

    def unwrap_model(self, model: Any) -> torch.nn.Module:
        return getattr(model, "module", model)

    def backward(self, loss: torch.Tensor) -> None:
        self._engine.backward(loss)

    @contextmanager
    def no_sync(self, model: Any) -> Iterator[None]:
        # ZeRO refuses no_sync; the engine accumulates until a micro-batch marked as the step's last
        self._engine.set_gradient_accumulation_boundary(False)
        try:
            yield
        finally:
            self._engine.set_gradient_accumulation_boundary(True)

    def clip_grad_norm_(self, parameters: list[torch.nn.Parameter], max_norm: float) -> None:
        return None  # DeepSpeed clips inside its step (gradient_clipping in its config)

    def full_state_dict(self, model: Any) -> dict[str, torch.Tensor] | None:
        if self.cfg.strategy != "zero3":
            return None  # ZeRO-2 keeps whole weights on every process
        return self._engine._zero3_consolidated_16bit_state_dict()  # collective: gathered layer by layer on rank 0

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        return {"state": {}, "param_groups": []}  # each process writes its own partition (save_optimizer_shard)

    def load_optimizer_state(self, optimizer: Any, state: dict[str, Any]) -> None:
        pass

    def _partitions(self) -> list[torch.Tensor]:
        """This process's fp32 partitions, which the AdamW states belong to (ZeRO-3's, else ZeRO-2's)."""
        zero = self._engine.optimizer
        return list(getattr(zero, "fp32_partitioned_groups_flat", None) or zero.single_partition_of_fp32_groups)

    def save_optimizer_shard(self, folder: Path) -> None:
        from tailored.train.checkpoint import write_optimizer

        states = self._base_optimizer.state
        sd = {"state": {i: states[p] for i, p in enumerate(self._partitions()) if p in states},
              "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self._base_optimizer.param_groups]}
        write_optimizer(folder, sd, name=f"optimizer-rank{self.process_index}")

    def load_optimizer_shard(self, folder: Path) -> None:
        from tailored.train.checkpoint import read_optimizer

        sd = read_optimizer(folder, name=f"optimizer-rank{self.process_index}")
        saved = sd["state"]
        for group, was in zip(self._base_optimizer.param_groups, sd["param_groups"]):
            group.update(was)  # the learning rate of the saved step, and the group's other settings
        for i, p in enumerate(self._partitions()):
            if i in saved:
                self._base_optimizer.state[p] = {k: v.to(p.device) if isinstance(v, torch.Tensor) else v
                                                 for k, v in saved[i].items()}


class _Steps:
    """What the loop calls on its optimizer, for a DeepSpeed engine (whose ``step`` also zeroes the gradients)."""

    def __init__(self, engine: Any, optimizer: torch.optim.Optimizer) -> None:
        self.engine, self.optimizer = engine, optimizer
        self.param_groups = optimizer.param_groups

    def step(self) -> None:
        self.engine.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass
