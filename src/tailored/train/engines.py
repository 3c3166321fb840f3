"""The engines' configs, built from the run's settings, on top of a user's own file (``strategy_config``).

A user's file fills what Tailored does not decide; where it says something else than the run's
settings (a ZeRO stage other than the strategy's, a batch size, clipping, precision), that is an error
naming both, so a run never trains differently from what its config.yaml and manifest say.
Tailored builds the optimizer (AdamW) and its schedule itself: a file's optimizer or scheduler is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailored.config.schema import TrainConfig
from tailored.errors import ConfigError

_AUTO = (None, "auto")


def _read(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"strategy_config: {path} does not exist", hint="pass a DeepSpeed JSON or an accelerate YAML file")
    text = file.read_text()
    try:
        data = json.loads(text) if file.suffix == ".json" else _yaml(text)
    except ValueError as exc:
        raise ConfigError(f"strategy_config: {path} is not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"strategy_config: {path} must hold a mapping of settings")
    return data


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def deepspeed_config(cfg: TrainConfig, precision: str, world: int) -> dict[str, Any]:
    """DeepSpeed's config for ``cfg.strategy`` (zero2 or zero3) over ``world`` processes.

    The loop feeds micro-batches of varying size and marks each step's last one itself, so DeepSpeed
    sees one micro-batch per step (``gradient_accumulation_steps`` 1) whatever the batching.
    """
    stage = 2 if cfg.strategy == "zero2" else 3
    ours: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": world,
        "gradient_clipping": float(cfg.max_grad_norm or 0.0),
        "bf16": {"enabled": precision == "bf16"}, "fp16": {"enabled": precision == "fp16"},
    }
    user = _read(cfg.strategy_config) if cfg.strategy_config else {}
    problems = [f"strategy_config {cfg.strategy_config}: remove its {key!r} section (Tailored builds AdamW and the "
                "learning-rate schedule from its own settings)" for key in ("optimizer", "scheduler") if key in user]
    for key, value in ours.items():
        given = user.get(key)
        if isinstance(value, dict):
            given = (given or {}).get("enabled") if isinstance(given, dict) else given
            value = value["enabled"]
        if given not in _AUTO and given != value:
            problems.append(f"strategy_config {cfg.strategy_config}: {key} is {given!r} there, {value!r} by the run's "
                            f"settings (precision {precision}, max_grad_norm {cfg.max_grad_norm}, {world} processes)")
    zero = dict(user.get("zero_optimization") or {})
    if zero.get("stage") not in _AUTO and zero.get("stage") != stage:
        problems.append(f"strategy_config {cfg.strategy_config}: zero_optimization.stage is {zero['stage']}, strategy "
                        f"{cfg.strategy} is stage {stage}")
    if problems:
        raise ConfigError(problems, hint="make the file agree with the run's settings, or leave those keys out of it")
    zero["stage"] = stage
    if cfg.cpu_offload:
        zero.setdefault("offload_optimizer", {"device": "cpu", "pin_memory": True})
        if stage == 3:
            zero.setdefault("offload_param", {"device": "cpu", "pin_memory": True})
    merged = {**user, **ours, "zero_optimization": zero}
    merged.setdefault("zero_allow_untested_optimizer", True)  # torch's AdamW, the same as every other strategy
    merged.setdefault("zero_force_ds_cpu_optimizer", False)
    merged.setdefault("steps_per_print", 10**9)
    return merged


_FSDP_KEYS = {"fsdp_version", "fsdp_reshard_after_forward", "fsdp_offload_params", "fsdp_activation_checkpointing",
              "fsdp_auto_wrap_policy", "fsdp_transformer_layer_cls_to_wrap", "fsdp_state_dict_type",
              "fsdp_cpu_ram_efficient_loading", "fsdp_sync_module_states", "fsdp_use_orig_params"}


def fsdp_settings(cfg: TrainConfig, precision: str) -> dict[str, Any]:
    """FSDP2's settings for the run: from the run's settings, then an accelerate config's ``fsdp_config``.

    Of an accelerate file Tailored applies ``fsdp_reshard_after_forward`` and checks ``fsdp_version`` (2),
    ``fsdp_offload_params`` (= cpu_offload), ``fsdp_activation_checkpointing`` (= gradient_checkpointing)
    and ``mixed_precision`` (= precision); blocks are always wrapped by the model's own layer classes
    and the final weights always gathered to a full state dict.
    """
    out: dict[str, Any] = {"reshard_after_forward": True, "offload_params": cfg.cpu_offload,
                           "param_dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32")}
    if not cfg.strategy_config:
        return out
    user = _read(cfg.strategy_config)
    fsdp = user.get("fsdp_config") or {}
    name = cfg.strategy_config
    problems = [f"strategy_config {name}: {key} is not an FSDP setting Tailored knows (it knows {', '.join(sorted(_FSDP_KEYS))})"
                for key in fsdp if key not in _FSDP_KEYS]
    if str(fsdp.get("fsdp_version", 2)) != "2":
        problems.append(f"strategy_config {name}: fsdp_version {fsdp['fsdp_version']}; Tailored runs FSDP2 (fsdp_version: 2)")
    for key, setting, value in (("fsdp_offload_params", "cpu_offload", cfg.cpu_offload),
                                ("fsdp_activation_checkpointing", "gradient_checkpointing", cfg.gradient_checkpointing)):
        if key in fsdp and bool(fsdp[key]) != value:
            problems.append(f"strategy_config {name}: {key} is {fsdp[key]}, the run's {setting} is {value}")
    mp = user.get("mixed_precision")
    if mp not in _AUTO and str(mp).replace("no", "fp32") != precision:
        problems.append(f"strategy_config {name}: mixed_precision is {mp}, the run's precision is {precision}")
    if problems:
        raise ConfigError(problems, hint=f"set the run's own settings instead ({', '.join(('cpu_offload', 'gradient_checkpointing', 'precision'))}) "
                                         "or make the file agree")
    out["reshard_after_forward"] = bool(fsdp.get("fsdp_reshard_after_forward", True))
    return out


def config_record(path: str | None) -> dict[str, Any] | None:
    """The user's engine config file as the manifest records it (path and sha256)."""
    if not path:
        return None
    from tailored.config.files import file_sha256

    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}
