"""Generation for a base model or a run folder: one class used by chat, eval and the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tailored.config.manifest import Manifest, is_run_dir
from tailored.data.stops import stop_token_ids
from tailored.methods.runs import load_run
from tailored.models.load import load_model, load_tokenizer, local_folder


@dataclass
class GenerationSettings:
    """How to generate one answer: for :class:`ChatModel` (chat, eval) and each row of the server's decode loop.

    The server maps OpenAI's ``max_tokens`` / ``max_completion_tokens`` to ``max_new_tokens`` where a
    request comes in. ``seed``: here the batch's torch seed; in the server choice *i* uses ``seed + i``.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # cut before the first of these
    ignore_eos: bool = False  # generate max_new_tokens whatever the model says (benchmarks)


class ChatModel:
    """A loaded model + tokenizer + the chat template it was trained with."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, manifest: Manifest | None = None, name: str = "") -> None:
        self.model, self.tokenizer, self.manifest, self.name = model, tokenizer, manifest, name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        recorded = [*(manifest.eos_token_ids if manifest else []), *([eos] if isinstance(eos, int) else (eos or []))]
        self.stop_ids = stop_token_ids(tokenizer, manifest.chat_template if manifest else None, recorded)

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def generate_batch(self, conversations: list[list[dict[str, Any]]], settings: GenerationSettings | None = None) -> list[str]:
        """Answers for several conversations in one left-padded batch."""
        s = settings or GenerationSettings()
        prompts = [self.prompt_ids(c) for c in conversations]
        width = max(len(p) for p in prompts)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        if s.seed is not None:
            torch.manual_seed(s.seed)
        device = next(self.model.parameters()).device
        out = self.model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=s.max_new_tokens,
            do_sample=s.temperature > 0, temperature=s.temperature if s.temperature > 0 else None,
            top_p=s.top_p if s.temperature > 0 else None, top_k=None, eos_token_id=self.stop_ids, pad_token_id=pad,
            **({"min_new_tokens": s.max_new_tokens} if s.ignore_eos else {}),  # EOS suppressed until the limit
        )
        texts = [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]
        return [_cut(t, s.stop) for t in texts]

    def chat(self, messages: list[dict[str, Any]] | str, **settings: Any) -> str:
        """One answer; ``messages`` may be a plain prompt string."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.generate_batch([messages], GenerationSettings(**settings))[0]


def _cut(text: str, stop: list[str] | None) -> str:
    for s in stop or []:
        if s and s in text:
            text = text[: text.index(s)]
    return text.strip() if stop else text


def load(run_or_model: str | Path | None = None, *, which: str = "auto", device: str = "cpu") -> ChatModel:
    """Load a run folder (base + trained weights, training chat template) or a base model."""
    if run_or_model is not None and is_run_dir(run_or_model):
        model, tok, manifest = load_run(run_or_model, which=which, device=device)
        return ChatModel(model, tok, manifest, name=Path(run_or_model).name)
    folder = local_folder(None if run_or_model is None else str(run_or_model))
    model = load_model(folder, device=device)
    model.eval()
    return ChatModel(model, load_tokenizer(folder), None, name=folder.name)
