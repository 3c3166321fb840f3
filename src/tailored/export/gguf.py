"""``--format gguf``: one GGUF file (f32, f16 or q8_0) for llama.cpp, Ollama, LM Studio, written with ``gguf``.

What llama.cpp's own converter does, for Llama-architecture models:

- tensors renamed to llama.cpp names (``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight``);
- q/k projections re-permuted (llama.cpp's rotary embedding pairs interleaved rows, HF pairs halves);
- 1-D tensors (norms) kept in f32, matrices in the chosen type; q8_0 through ``gguf.quants.quantize``;
- metadata: when the base came from a GGUF file (the embedded model), every key of the ORIGINAL file
  is copied (tokenizer vocabulary, merges, pre-tokenizer name, hyperparameters), so llama.cpp splits
  text exactly as before; otherwise it is built from the HF config and byte-level BPE tokenizer.

Either way the chat template is the run's training template and the stop token is the template's
end-of-turn token (``tokenizer.ggml.eos_token_id`` and ``eot_token_id``), so runtimes stop after the answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailored.config.files import file_sha256
from tailored.config.manifest import Manifest
from tailored.export.common import ExportError
from tailored.export.merge import MergedRun

SUPPORTED = ("llama",)
# Keys of an original GGUF that are re-written for the export rather than copied.
_REWRITTEN = ("general.architecture", "general.file_type", "general.quantization_version", "tokenizer.chat_template",
              "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")


def permute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: HF's half-split rotary layout -> interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _check_architecture(config: Any) -> None:
    if config.model_type not in SUPPORTED:
        raise ExportError(
            f"GGUF export supports the Llama architecture (SmolLM, Llama, TinyLlama ...), not {config.model_type!r}",
            hint="export --format merged and convert that folder with llama.cpp's convert_hf_to_gguf.py",
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ExportError(f"GGUF export does not write rope scaling {rope.get('rope_type')!r} yet",
                          hint="export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py")


def _rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def original_gguf(manifest: Manifest) -> tuple[Path | None, str | None]:
    """(path, problem) of the GGUF file the base model was converted from, if it came from one."""
    base = manifest.base_model
    if base.kind not in ("embedded", "gguf"):
        return None, None
    from tailored.models.registry import resolve_model

    try:
        path = Path(resolve_model(base.spec).path)
    except Exception as exc:  # noqa: BLE001 - the package or file went away since training
        return None, f"the base's original GGUF is not available ({exc}); tokenizer metadata was rebuilt from the HF tokenizer"
    if base.content_hash and file_sha256(path) != base.content_hash:
        return None, (f"{path} changed since training (hash differs); tokenizer metadata was rebuilt from the HF "
                      "tokenizer instead of copied")
    return path, None


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_metadata(path: Path) -> list[tuple[str, Any, int, int | None]]:
    """(key, value, value type, array item type) of every metadata entry of a little-endian GGUF v2/v3.

    ``gguf.GGUFReader`` gives the same values but builds numpy views for every array item, which takes
    ~8 s for SmolLM2's 49k tokens and merges; this walks the header once (~0.2 s). Tested against it.
    """
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF" or struct.unpack_from("<I", buf, 4)[0] not in (2, 3):
            raise ExportError(f"{path} is not a GGUF v2/v3 file", hint="re-download or re-convert the base model")
        pos = 24  # magic, version, tensor count, metadata count
        count = struct.unpack_from("<Q", buf, 16)[0]

        def string() -> str:
            nonlocal pos
            (n,) = struct.unpack_from("<Q", buf, pos)
            pos += 8 + n
            return buf[pos - n:pos].decode("utf-8")

        def value(vtype: int) -> Any:
            nonlocal pos
            if vtype == 8:
                return string()
            fmt = _SCALARS[vtype]
            (v,) = struct.unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return v

        out = []
        for _ in range(count):
            key = string()
            (vtype,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if vtype == 9:
                sub, n = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                out.append((key, [value(sub) for _ in range(n)], vtype, sub))
            else:
                out.append((key, value(vtype), vtype, None))
        return out


def _copy_metadata(writer: Any, path: Path) -> None:
    import gguf

    for key, value, vtype, sub in read_metadata(path):
        if key.startswith(("GGUF.", "tailored.")) or key in _REWRITTEN:  # tailored.*: a base that is itself an export
            continue
        writer.add_key_value(key, value, gguf.GGUFValueType(vtype),
                             sub_type=None if sub is None else gguf.GGUFValueType(sub))


def _hf_metadata(writer: Any, config: Any, tokenizer: Any, name: str) -> list[str]:
    """Hyperparameters and a byte-level BPE tokenizer from HF objects; returns warnings."""
    import gguf

    warnings: list[str] = []
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, pre = spec["model"], spec.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    if model.get("type") != "BPE" or not any(p.get("type") == "ByteLevel" for p in pres):
        raise ExportError("GGUF export builds tokenizer metadata only for byte-level BPE tokenizers (GPT-2/Llama-3 style)",
                          hint="export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py")
    plain = len(pres) == 1 and pres[0].get("use_regex", True)
    if not plain:
        warnings.append("the tokenizer splits text with a custom pre-tokenizer that the GGUF cannot name; llama.cpp "
                        "uses its default split, which can tokenize some text differently")
    vocab_size = config.vocab_size
    if len(tokenizer) > vocab_size:
        raise ExportError(f"the tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} embeddings",
                          hint="the run's tokenizer does not match its model; check the run folder")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    for token, idx in tokenizer.get_vocab().items():
        tokens[idx], types[idx] = token, int(gguf.TokenType.NORMAL)
    for idx, added in tokenizer.added_tokens_decoder.items():
        types[idx] = int(gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2" if plain else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    for setter, value in ((writer.add_bos_token_id, tokenizer.bos_token_id), (writer.add_unk_token_id, tokenizer.unk_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if value is not None:
            setter(int(value))
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(tokenizer.bos_token_id is not None and probe and probe[0] == tokenizer.bos_token_id))
    writer.add_add_eos_token(False)
    return warnings


def _tensors(model: torch.nn.Module, dtype: str) -> list[tuple[str, np.ndarray, Any]]:
    """(gguf name, data, raw type or None) for every weight, renamed, permuted and converted."""
    import gguf
    from gguf.quants import quantize

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    out = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"no llama.cpp name for weight {hf_name!r}", hint="export --format merged instead")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, config.num_attention_heads, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, config.num_attention_heads, config.num_key_value_heads)
        if data.ndim == 1 or dtype == "f32":
            out.append((name, np.ascontiguousarray(data, dtype=np.float32), None))
        elif dtype == "q8_0" and data.shape[-1] % 32 == 0:
            q = gguf.GGMLQuantizationType.Q8_0
            out.append((name, quantize(np.ascontiguousarray(data), q), q))
        else:  # f16, or q8_0 rows not divisible into 32-blocks (llama.cpp's converter falls back the same way)
            out.append((name, np.ascontiguousarray(data, dtype=np.float16), None))
    return out


def write_gguf(merged: MergedRun, path: Path, *, dtype: str, stop_ids: list[int], eot_id: int | None,
               run_name: str) -> tuple[list[str], list[str]]:
    """Write ``merged`` as one GGUF file at ``path``.

    Args:
        merged: the merged run (fp32 weights).
        path: the .gguf file to write.
        dtype: f16, q8_0 or f32.
        stop_ids: every stop token id (recorded under ``tailored.stop_token_ids``).
        eot_id: the chat template's end-of-turn id (None if the template has none).
        run_name: name written as ``general.name`` when metadata is built from scratch.

    Returns:
        (warnings, notes).
    """
    import gguf

    model, tokenizer, manifest = merged.model, merged.tokenizer, merged.manifest
    _check_architecture(model.config)
    warnings: list[str] = []
    notes: list[str] = []
    writer = gguf.GGUFWriter(None, "llama")
    source, problem = original_gguf(manifest)
    if problem:
        warnings.append(problem)
    if source is not None:
        _copy_metadata(writer, source)
        notes.append(f"tokenizer and hyperparameter metadata copied from the original GGUF {source.name}")
    else:
        warnings += _hf_metadata(writer, model.config, tokenizer, run_name)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    template = manifest.chat_template or tokenizer.chat_template
    if template:
        writer.add_chat_template(template)
    eos = eot_id if eot_id is not None else stop_ids[0]
    writer.add_eos_token_id(int(eos))
    if eot_id is not None:
        writer.add_eot_token_id(int(eot_id))
    writer.add_array("tailored.stop_token_ids", [int(i) for i in stop_ids])
    writer.add_string("tailored.source_run", run_name)
    writer.add_string("tailored.method", manifest.method.name)
    for name, data, raw in _tensors(model, dtype):
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return warnings, notes
