"""The only place that loads weights.

The embedded model is converted from its GGUF file once into a safetensors folder under
``$TAILORED_HOME/models/`` (atomically: a killed conversion leaves nothing half-written), so later
loads take about a second instead of ~40 s. Weights are only ever read from safetensors or GGUF;
``trust_remote_code`` is always off.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from tailored.config.files import atomic_folder, file_sha256, folder_sha256
from tailored.errors import ModelError
from tailored.models.registry import ModelSource, is_offline, resolve_model, tailored_home


def content_hash(folder: Path) -> str:
    """Hash of a model folder's weight files (recorded in every run manifest)."""
    marker = folder / "tailored_source.json"
    if marker.is_file():
        recorded = json.loads(marker.read_text()).get("content_hash")
        if recorded:
            return recorded
    return folder_sha256(folder)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize ``gguf`` with transformers and save it as safetensors into ``target`` atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_folder(target, keep_existing=True) as tmp:  # another process may win the race: keep theirs
        start = time.time()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are
        # already dequantized to fp32, so drop the marker (see ../shared/reference/feasibility.md).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        digest = file_sha256(gguf)
        (tmp / "tailored_source.json").write_text(
            json.dumps(
                {
                    "source": str(gguf),
                    "gguf_sha256": digest,
                    "content_hash": digest,
                    "converted_in_s": round(time.time() - start, 1),
                },
                indent=2,
            )
        )


def local_folder(source: ModelSource | str | None = None) -> Path:
    """A local safetensors folder for ``source``, converting GGUF files once into the cache."""
    src = source if isinstance(source, ModelSource) else resolve_model(source)
    if src.kind == "hf_dir":
        return Path(src.path)
    if src.kind in ("embedded", "gguf"):
        gguf = Path(src.path)
        key = src.name if src.kind == "embedded" else f"{gguf.stem}-{file_sha256(gguf)[:12]}"
        target = tailored_home() / "models" / key
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
        return target
    if src.kind == "hub":
        if is_offline():
            raise ModelError(f"{src.name}: no local folder {src.name}, and it is not available from the hub offline",
                             hint="pass the path of a local model folder")
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(src.path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]))
        except Exception as exc:  # network errors come in many types
            first = str(exc).strip().split("\n")[0]
            raise ModelError(
                f"{src.name}: no local folder {src.name}, and it could not be downloaded from the hub ({first})",
                hint="check the path or the hub id and your connection, or pass a local model folder",
            ) from exc
    raise ModelError(f"unknown model kind {src.kind}")


def load_tokenizer(folder: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(folder: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", quantization: Any = None) -> torch.nn.Module:
    """Load a causal LM from a safetensors folder (never from pickle files)."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"{folder} holds no .safetensors weights; Tailored does not load pickled (.bin/.pt) weights",
            hint="convert the model with save_pretrained(..., safe_serialization=True)",
        )
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32, "trust_remote_code": False, "use_safetensors": True}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        if torch.device(device).type == "cuda":  # bitsandbytes quantizes while placing the weights
            kwargs["device_map"] = {"": str(device)}
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    if quantization is None:
        model.to(device)
    return model

