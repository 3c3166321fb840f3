"""The prompts of each strategy: zero-shot, few-shot (examples by embedding similarity), RAG (retrieved chunks).

All selection is deterministic: similarities are computed once, ties are broken by a permutation of
the candidates drawn from ``seed``, and the same inputs give the same prompts on every run.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from tailored.compare.index import DocIndex
from tailored.data.records import Example, Messages, last_user, with_system


@dataclass
class Pair:
    """One training example as few-shot material: its last user turn and its answer."""

    user: str
    answer: str


def pairs_of(examples: list[Example]) -> list[Pair]:
    out = []
    for ex in examples:
        msgs = ex.messages or []
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
        user = next((str(m.get("content") or "") for m in reversed(msgs[:last or 0]) if m.get("role") == "user"), None)
        if last is not None and user:
            out.append(Pair(user, str(msgs[last].get("content") or "")))
    return out


def common_system(examples: list[Example]) -> str | None:
    """The training data's system prompt (the most common one), if it has one."""
    found = Counter(str(m.get("content")) for ex in examples for m in (ex.messages or [])[:1] if m.get("role") == "system")
    return found.most_common(1)[0][0] if found else None


def label_instruction(labels: list[str]) -> str:
    return "Answer with exactly one of these labels and nothing else: " + ", ".join(labels) + "."


def ranked(similarity: np.ndarray, seed: int) -> list[list[int]]:
    """Candidates of each query row, most similar first; equal scores in a seeded order."""
    tiebreak = np.array(random.Random(seed).sample(range(similarity.shape[1]), similarity.shape[1]))
    rounded = np.round(similarity, 6)
    return [list(np.lexsort((tiebreak, -row))) for row in rounded]


def few_shot(prompts: list[Messages], queries: np.ndarray, pairs: list[Pair], pair_vectors: np.ndarray, *,
             count_tokens: Callable[[Messages], int], max_examples: int, max_prompt_tokens: int, seed: int,
             default_system: str | None) -> tuple[list[Messages], list[list[int]]]:
    """Each prompt with up to ``max_examples`` most similar training pairs as earlier turns (most similar last).

    k is chosen per query to fit: examples are added, best first, while the prompt stays within
    ``max_prompt_tokens``. Returns the prompts and the chosen pair numbers.
    """
    order = ranked(queries @ pair_vectors.T, seed)
    out, chosen = [], []
    for prompt, cand in zip(prompts, order):
        base = with_system(prompt, "", default_system)
        head, tail = (base[:1], base[1:]) if base and base[0].get("role") == "system" else ([], base)
        picked: list[int] = []
        for i in cand[: max_examples * 4]:
            if len(picked) == max_examples:
                break
            if pairs[i].user.strip() == last_user(prompt).strip():
                continue  # the query itself (a test line that is also in TRAIN) is no example
            trial = _shots(head, [pairs[j] for j in [*picked, i]], tail)
            if count_tokens(trial) > max_prompt_tokens:
                break
            picked.append(int(i))
        out.append(_shots(head, [pairs[j] for j in picked], tail))
        chosen.append(picked)
    return out, chosen


def _shots(head: Messages, shots: list[Pair], tail: Messages) -> Messages:
    turns: Messages = []
    for p in reversed(shots):  # the most similar example sits next to the query
        turns += [{"role": "user", "content": p.user}, {"role": "assistant", "content": p.answer}]
    return [*head, *turns, *tail]


def rag(prompts: list[Messages], queries: np.ndarray, index: DocIndex, *, top_k: int, count_tokens: Callable[[Messages], int],
        max_prompt_tokens: int, default_system: str | None) -> tuple[list[Messages], list[list[dict[str, Any]]]]:
    """Each prompt with the ``top_k`` best chunks (as many as fit) in its system message; the sources of each."""
    hits = index.search(queries, top_k)
    out, sources = [], []
    for prompt, found in zip(prompts, hits):
        used: list[dict[str, Any]] = []
        msgs = with_system(prompt, "", default_system)
        for n, score in found:
            c = index.chunks[n]
            trial_used = [*used, {"source": c.source, "chunk": c.index, "score": round(score, 4), "text": c.text}]
            trial = with_system(prompt, context_block(trial_used), default_system)
            if used and count_tokens(trial) > max_prompt_tokens:
                break
            used, msgs = trial_used, trial
        out.append(msgs)
        sources.append([{k: v for k, v in u.items() if k != "text"} for u in used])
    return out, sources


def context_block(used: list[dict[str, Any]]) -> str:
    parts = [f"[{i + 1}] ({u['source']})\n{u['text']}" for i, u in enumerate(used)]
    return ("Answer the question using the context below. Reply briefly, with the fact asked for.\n\nContext:\n"
            + "\n\n".join(parts))
