"""Generation for a base model or a run folder: one class used by chat, eval and the server.

Answers come from the same step engine as the server's (:mod:`tailored.engine`: continuous batching,
chunked prefill, a prefix cache shared by every call on this model, so a system prompt or a label list
common to an evaluation's prompts is computed once). Models the engine cannot run (prompt learning,
sliding-window attention) use transformers' ``generate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tailored.config.manifest import Manifest, RunFolder, is_run_dir
from tailored.data.stops import stop_token_ids
from tailored.engine.core import StepEngine, run
from tailored.engine.kv import engine_problem
from tailored.engine.prefix import PrefixCache
from tailored.engine.sampling import GenerationSettings, Row
from tailored.engine.text import TextStream
from tailored.methods.runs import load_run, run_neighbours
from tailored.models.load import load_model, load_tokenizer, local_folder
from tailored.models.neighbours import Neighbours


PREFIX_CACHE_BYTES = 256 * 2**20  # per ChatModel: a few thousand prompt tokens of a small model


class ChatModel:
    """A loaded model + tokenizer + the chat template it was trained with."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, manifest: Manifest | None = None, name: str = "",
                 neighbours: Neighbours | None = None) -> None:
        self.model, self.tokenizer, self.manifest, self.name = model, tokenizer, manifest, name
        self.neighbours = neighbours  # a run trained with labelled neighbours in its prompts gets them here too
        self._engine: StepEngine | None = None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        recorded = [*(manifest.eos_token_ids if manifest else []), *([eos] if isinstance(eos, int) else (eos or []))]
        self.stop_ids = stop_token_ids(tokenizer, manifest.chat_template if manifest else None, recorded)

    def render(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` as this model was trained to see them (its labelled neighbours listed, when it has them)."""
        return self.neighbours.prompt(messages) if self.neighbours is not None else messages

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(self.render(messages), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def rank_labels(self, conversations: list[list[dict[str, Any]]], labels: list[str], *,
                    on_progress: Any = None) -> tuple[list[str], float]:
        """The most probable of ``labels`` after each conversation as this model sees it, and the mean number of labels
        scored per conversation (:func:`tailored.eval.ranking.rank_labels`)."""
        from tailored.eval.ranking import rank_labels

        return rank_labels(self.model, self.tokenizer, [self.render(c) for c in conversations], labels,
                           on_progress=on_progress)

    def engine(self, *, prefix_cache: bool = True) -> StepEngine | None:
        """This model's step engine (None when it cannot run the model); its prefix cache lives as long as it."""
        if self._engine is None and engine_problem(self.model) is None:
            self._prefix = PrefixCache(PREFIX_CACHE_BYTES)
            self._engine = StepEngine(self.model, prefix=self._prefix)
        if self._engine is not None:
            self._engine.prefix = self._prefix if prefix_cache else None
        return self._engine

    def generate_batch(self, conversations: list[list[dict[str, Any]]], settings: GenerationSettings | None = None, *,
                       max_rows: int = 16, on_answer: Any = None, prefix_cache: bool = True) -> list[str]:
        """Answers for several conversations, decoded together (at most ``max_rows`` at once).

        Conversation ``i`` samples with ``seed + i`` (reproducible whatever the batching); ``on_answer(i,
        text)`` is told as each answer finishes. ``prefix_cache=False``: every prompt is computed in full.
        """
        s = settings or GenerationSettings()
        engine = self.engine(prefix_cache=prefix_cache)
        if engine is None:
            texts = self.hf_generate_batch(conversations, s)
            for i, text in enumerate(texts):
                if on_answer is not None:
                    on_answer(i, text)
            return texts
        import random

        prompts = [self.prompt_ids(c) for c in conversations]
        texts = [""] * len(prompts)
        grammar = None
        if s.constraint is not None:  # each row held to it by its own matcher (a per-row logits hook)
            from tailored.engine.constraints import compile as compile_constraint

            grammar = compile_constraint(s.constraint, self.tokenizer, self.stop_ids)
        rows = []
        for i in sorted(range(len(prompts)), key=lambda i: len(prompts[i])):  # similar lengths decode together
            stream = TextStream(self.tokenizer, set() if s.ignore_eos else set(self.stop_ids), s.stop)
            gen = None
            if s.temperature > 0:
                gen = torch.Generator().manual_seed((s.seed + i) % 2**64 if s.seed is not None else random.getrandbits(62))
            rows.append(Row(prompts[i], s, stream, _collect(texts, i, s.stop, on_answer), generator=gen,
                            hooks=[grammar.start()] if grammar is not None else []))
        engine.max_rows = max_rows
        run(engine, rows)
        return texts

    @torch.no_grad()
    def hf_generate_batch(self, conversations: list[list[dict[str, Any]]], settings: GenerationSettings | None = None) -> list[str]:
        """Answers for several conversations in one left-padded batch of transformers' ``generate``."""
        s = settings or GenerationSettings()
        prompts = [self.prompt_ids(c) for c in conversations]
        width = max(len(p) for p in prompts)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        if s.seed is not None:
            torch.manual_seed(s.seed)
        device = next(self.model.parameters()).device
        extra = self._constraint_processor(s, len(prompts), width)
        out = self.model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=s.max_new_tokens,
            do_sample=s.temperature > 0, temperature=s.temperature if s.temperature > 0 else None,
            top_p=s.top_p if s.temperature > 0 else None, top_k=None, eos_token_id=self.stop_ids, pad_token_id=pad,
            **({"min_new_tokens": s.max_new_tokens} if s.ignore_eos else {}),  # EOS suppressed until the limit
            **extra,
        )
        texts = [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]
        return [_cut(t, s.stop) for t in texts]

    def _constraint_processor(self, s: GenerationSettings, rows: int, width: int) -> dict[str, Any]:
        """``generate``'s ``logits_processor`` that holds each row to ``s.constraint`` (none without one)."""
        if s.constraint is None:
            return {}
        from transformers import LogitsProcessorList

        from tailored.engine.constraints import compile as compile_constraint
        from tailored.engine.hooks import HooksProcessor

        grammar = compile_constraint(s.constraint, self.tokenizer, self.stop_ids)
        hooks = HooksProcessor([[grammar.start()] for _ in range(rows)], width, self.stop_ids)
        return {"logits_processor": LogitsProcessorList([hooks])}

    def chat(self, messages: list[dict[str, Any]] | str, **settings: Any) -> str:
        """One answer; ``messages`` may be a plain prompt string."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.generate_batch([messages], GenerationSettings(**settings))[0]


def _collect(texts: list[str], i: int, stop: list[str], on_answer: Any) -> Any:
    parts: list[str] = []

    def emit(text: str, finish: str | None) -> None:
        parts.append(text)
        if finish is not None:
            texts[i] = _cut("".join(parts), stop)
            if on_answer is not None:
                on_answer(i, texts[i])
    return emit


def _cut(text: str, stop: list[str] | None) -> str:
    for s in stop or []:
        if s and s in text:
            text = text[: text.index(s)]
    return text.strip() if stop else text


def load(run_or_model: str | Path | None = None, *, which: str = "auto", device: str = "cpu") -> ChatModel:
    """Load a run folder (base + trained weights merged in memory where the method allows, training chat
    template) or a base model."""
    if run_or_model is not None and is_run_dir(run_or_model):
        model, tok, manifest = load_run(run_or_model, which=which, device=device, merged=True)
        return ChatModel(model, tok, manifest, name=Path(run_or_model).name,
                         neighbours=run_neighbours(RunFolder(run_or_model), manifest))
    folder = local_folder(None if run_or_model is None else str(run_or_model))
    model = load_model(folder, device=device)
    model.eval()
    return ChatModel(model, load_tokenizer(folder), None, name=folder.name)
