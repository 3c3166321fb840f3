"""Model shapes: the numbers that decide parameter counts, memory and compute, without any weights.

A shape comes from a ``config.json`` (:func:`shape_from_config`) or a published preset (``PRESETS``,
size ``ALIASES`` such as ``7b``). Only layer widths, counts, vocabulary and whether the output
projection is tied to the embedding are kept. Parameter counts are computed from the shape (checked
against published counts in ``tests/test_estimate.py``); each method sizes itself on a shape
(``Method.footprint``), which is what ``tailored methods`` and ``tailored estimate`` report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailored.errors import ConfigError


@dataclass(frozen=True)
class ModelShape:
    """A transformer's shape. ``kind`` is ``decoder`` (Llama-like) or ``t5`` (encoder-decoder).

    For ``t5``, ``layers`` counts encoder and decoder layers each, ``gated`` means a gated-GELU MLP.
    """

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool = False
    kind: str = "decoder"
    gated: bool = True

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Per projection name: (in_features, out_features, how many in the model)."""
        h, m = self.hidden, self.intermediate
        mlp = {"gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)} if self.gated else {"up_proj": (h, m), "down_proj": (m, h)}
        attn = {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim), "o_proj": (self.q_dim, h)}
        if self.kind == "t5":  # encoder self-attn, decoder self- and cross-attn
            return {**{k: (i, o, 3 * self.layers) for k, (i, o) in attn.items()}, **{k: (i, o, 2 * self.layers) for k, (i, o) in mlp.items()}}
        return {k: (i, o, self.layers) for k, (i, o) in {**attn, **mlp}.items()}

    def select_linears(self, names: str | list[str]) -> dict[str, tuple[int, int, int]]:
        """The linear layers a peft-style ``target_modules`` names: ``all-linear`` (every projection of the
        blocks, not the output head) or module names (Llama's ``q_proj``..., T5's ``q``, ``wi_0``, ``wo``...).

        Raises ConfigError for a name that is no projection of this shape, as peft would refuse it.
        """
        linears = self.linear_shapes()
        if names == "all-linear":
            return linears
        wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        canonical = {_T5_NAMES.get(n, n) for n in wanted if n}
        unknown = sorted(canonical - set(linears))
        if unknown:
            raise ConfigError(f"target_modules {','.join(unknown)}: no such linear layer in {self.name}",
                              hint=f"use all-linear or some of {', '.join(linears)}")
        return {k: v for k, v in linears.items() if k in canonical}

    @property
    def linear_params(self) -> int:
        """Parameters in the transformer blocks' linear layers (what LoRA targets and QLoRA quantizes)."""
        return sum(i * o * n for i, o, n in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        """Input embedding plus (when untied) the output projection."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def n_params(self) -> int:
        norms = self.hidden * (2 * self.layers + 1) * (2 if self.kind == "t5" else 1)
        return self.linear_params + self.embedding_params + norms


# T5's module names for the projections this shape calls by their Llama names.
_T5_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "wi_0": "gate_proj", "wi_1": "up_proj",
             "wi": "up_proj", "wo": "down_proj"}


def _llama(name: str, h: int, layers: int, heads: int, kv: int, inter: int, vocab: int, tied: bool = False) -> ModelShape:
    return ModelShape(name, h, layers, heads, kv, h // heads, inter, vocab, tied)


# Published shapes (config.json of each model). Size aliases use the standard Llama shapes.
PRESETS: dict[str, ModelShape] = {
    "llama-2-7b": _llama("llama-2-7b", 4096, 32, 32, 32, 11008, 32000),
    "llama-2-13b": _llama("llama-2-13b", 5120, 40, 40, 40, 13824, 32000),
    "llama-2-70b": _llama("llama-2-70b", 8192, 80, 64, 8, 28672, 32000),
    "llama-3.1-8b": _llama("llama-3.1-8b", 4096, 32, 32, 8, 14336, 128256),
    "llama-3.1-70b": _llama("llama-3.1-70b", 8192, 80, 64, 8, 28672, 128256),
    "llama-3.2-1b": _llama("llama-3.2-1b", 2048, 16, 32, 8, 8192, 128256, tied=True),
    "llama-3.2-3b": _llama("llama-3.2-3b", 3072, 28, 24, 8, 8192, 128256, tied=True),
    "smollm2-135m": _llama("smollm2-135m", 576, 30, 9, 3, 1536, 49152, tied=True),
    "smollm2-360m": _llama("smollm2-360m", 960, 32, 15, 5, 2560, 49152, tied=True),
    "smollm2-1.7b": _llama("smollm2-1.7b", 2048, 24, 32, 32, 8192, 49152, tied=True),
    # bigscience/T0_3B: T5 v1.1 XL (gated-GELU, untied head), the model of PEFT's memory table.
    "t0-3b": ModelShape("t0-3b", 2048, 24, 32, 32, 64, 5120, 32128, tied=False, kind="t5", gated=True),
}
ALIASES = {"7b": "llama-2-7b", "13b": "llama-2-13b", "70b": "llama-2-70b", "8b": "llama-3.1-8b", "1b": "llama-3.2-1b",
           "3b": "llama-3.2-3b", "135m": "smollm2-135m", "360m": "smollm2-360m", "1.7b": "smollm2-1.7b"}


def shape_from_config(cfg: dict[str, Any], name: str = "model") -> ModelShape:
    """A shape from a Hugging Face ``config.json`` (Llama-like decoders and T5)."""
    try:
        if cfg.get("model_type") in ("t5", "mt5") or "d_model" in cfg:
            return ModelShape(name, cfg["d_model"], cfg["num_layers"], cfg["num_heads"], cfg["num_heads"], cfg["d_kv"],
                              cfg["d_ff"], cfg["vocab_size"], tied=cfg.get("tie_word_embeddings", True), kind="t5",
                              gated="gated" in str(cfg.get("feed_forward_proj", "relu")))
        h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        return ModelShape(name, h, cfg["num_hidden_layers"], heads, cfg.get("num_key_value_heads") or heads,
                          cfg.get("head_dim") or h // heads, cfg["intermediate_size"], cfg["vocab_size"],
                          tied=bool(cfg.get("tie_word_embeddings", False)))
    except KeyError as exc:
        raise ConfigError(f"config.json of {name} has no {exc.args[0]!r}: cannot derive the model's shape",
                          hint="pass a size instead (e.g. --model 7b) or a Llama-like / T5 model folder") from exc


def shape_of_folder(folder: str | Path, name: str | None = None) -> ModelShape:
    """The shape of the model in ``folder`` (its ``config.json``; no weights are read)."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder} has no config.json", hint="pass a model folder (config.json + safetensors)")
    return shape_from_config(json.loads(path.read_text()), name or folder.name)
