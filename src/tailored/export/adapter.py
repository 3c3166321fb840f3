"""``--format adapter``: the trained adapter alone, checked against what vLLM and LoRAX accept.

Servers load LoRA adapters on top of a base they already hold, and reject (or silently mis-serve)
adapters that need more than that. The checks below name each such problem with its fix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tailored.config.manifest import BaseModelRecord, RunFolder
from tailored.export.common import ExportError
from tailored.methods.runs import run_method, run_tokenizer

VLLM_MAX_LORA_RANK = 16  # vLLM's default --max-lora-rank
UNSERVABLE_TARGETS = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out")


def check_adapter_config(config: dict[str, Any]) -> list[str]:
    """Problems vLLM/LoRAX have with a peft ``adapter_config.json``, each with what to do.

    Args:
        config: the parsed adapter_config.json.
    """
    problems = []
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        problems.append(f"peft_type {peft_type or '?'}: vLLM and LoRAX serve only LoRA adapters; serve this one with "
                        "`tailored serve` or peft (PeftModel.from_pretrained)")
        return problems
    if config.get("use_dora"):
        problems.append("use_dora: vLLM and LoRAX reject DoRA adapters; export --format merged (DoRA merges exactly) "
                        "or serve with `tailored serve`/peft")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']}: the adapter carries full copies of these layers, "
                        "which vLLM and LoRAX refuse; export --format merged, or retrain without modules_to_save")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    bad = sorted(t for t in targets if any(t == u or t.endswith("." + u) for u in UNSERVABLE_TARGETS))
    if bad:
        problems.append(f"target_modules {bad}: vLLM cannot apply LoRA to embedding/output layers; export --format "
                        "merged, or retrain with target_modules limited to the linear layers")
    rank = int(config.get("r") or 0)
    ranks = [rank, *[int(v) for v in (config.get("rank_pattern") or {}).values()]]
    if max(ranks) > VLLM_MAX_LORA_RANK:
        need = next(v for v in (32, 64, 128, 256, 320, 512) if v >= max(ranks))
        problems.append(f"rank {max(ranks)} is above vLLM's default --max-lora-rank {VLLM_MAX_LORA_RANK}: start vLLM "
                        f"with --max-lora-rank {need} (LoRAX: --max-lora-rank as well)")
    if str(config.get("bias", "none")) != "none":
        problems.append(f"bias={config['bias']}: vLLM needs --enable-lora-bias for adapters with trained biases")
    return problems


def fix_base_reference(config: dict[str, Any], base: BaseModelRecord) -> tuple[dict[str, Any], list[str]]:
    """Point ``base_model_name_or_path`` at something a server can resolve, or say why it cannot."""
    current = str(config.get("base_model_name_or_path") or "")
    notes: list[str] = []
    if base.kind == "hub":
        if current != base.spec:
            config = dict(config, base_model_name_or_path=base.spec)
            notes.append(f"set base_model_name_or_path to the hub id {base.spec!r} (was {current!r})")
    elif current.startswith(("/", ".", "~")) or Path(current).exists():
        extra = (" (the embedded SmolLM2-135M-Instruct, dequantized from its Q4_1 GGUF: the hub's original "
                 "weights differ slightly)" if base.kind == "embedded" else "")
        notes.append(f"base_model_name_or_path is the local path {current!r}{extra}; servers on other machines "
                     "must be started with that base model passed explicitly")
    return config, notes


def write_adapter(run_dir: Path, folder: Path, *, which: str = "final") -> tuple[list[str], list[str]]:
    """Copy the run's adapter weights + config (checked) and its tokenizer with the training template.

    Args:
        run_dir: the run folder.
        folder: target folder (exists, empty).
        which: final, best or a checkpoint name.

    Returns:
        (warnings, notes).

    Raises:
        ExportError: the run is a full fine-tune (nothing to export as an adapter).
    """
    run = RunFolder(run_dir)
    manifest = run.read()
    source = run.weights(which)
    method, _ = run_method(manifest)
    if method.weights_format == "model":
        raise ExportError(f"a {method.name} fine-tune has no adapter: every weight of the model was trained",
                          hint="export it with --format merged (or --format gguf)")
    warnings: list[str] = []
    notes: list[str] = []
    config_path = source / "adapter_config.json"
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name != "README.md" and not path.name.startswith(("tokenizer", "chat_template",
                                                                                   "special_tokens")):
            shutil.copy2(path, folder / path.name)
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config, notes = fix_base_reference(config, manifest.base_model)
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        warnings = check_adapter_config(config)
    else:
        warnings.append(f"method {method.name} is not a peft adapter: vLLM, LoRAX and peft cannot load it; "
                        "serve it with `tailored serve`")
    run_tokenizer(run, manifest).save_pretrained(str(folder))
    return warnings, notes
