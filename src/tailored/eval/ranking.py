"""Classification answers by ranking the label set: the label the model finds most probable, exactly.

Decoding held to the labels (``accuracy_constrained``) picks one token at a time, so a label whose
first token is less likely loses even when it is, as a whole, the most probable answer. Ranking scores
each label as the answer training trained on -- the summed log-probability of the label's tokens and
the template's end of turn, after the prompt, tokenized by the training code (:func:`encode_example`)
-- and answers the highest: the exact most probable label under the language model itself (exact up to
floating-point rounding where the bound and the score come from separate passes: prompt learning).

Scoring every label after every prompt would cost one pass per label (77 on banking77); a
branch-and-bound keeps it to a few. A label's score is at most the log-probability of its first token
(every later token only subtracts), so once some label scores S no label whose first token is below S
can win, and none of those is scored. The first-token log-probabilities come from one pass over the
prompt; the candidates are then scored best first, a few rows per pass, until the bound stops them.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from tailored.data.batching import pad_rows
from tailored.data.records import Example
from tailored.data.tokenize import IGNORE, Encoded, encode_example, render
from tailored.engine.kv import engine_problem, new_cache, tensors
from tailored.train.forward import labelled_logits

FIRST_PASS, ROWS_PER_PASS = 2, 8  # the two likeliest labels first: often their score already bounds out the rest


def label_rows(tokenizer: Any, prompt: list[dict[str, Any]], labels: list[str]) -> list[Encoded]:
    """Each label as the answer to ``prompt``, tokenized with assistant-only labels as in training."""
    return [encode_example(tokenizer, Example(0, [*prompt, {"role": "assistant", "content": label}])) for label in labels]


class _Continuations:
    """The labels' answer tokens, computed once and reused after every prompt whose tokens they extend."""

    def __init__(self, tokenizer: Any, labels: list[str]) -> None:
        self.tokenizer, self.labels = tokenizer, labels
        self.tails: list[list[int]] | None = None

    def rows(self, prompt: list[dict[str, Any]]) -> list[Encoded]:
        prefix = self.tokenizer(render(self.tokenizer, prompt, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        if self.tails is not None:  # the same tails fit when the first label still encodes as prefix + its tail
            check = label_rows(self.tokenizer, prompt, self.labels[:1])[0]
            if check.input_ids == prefix + self.tails[0] and _first_label(check) == len(prefix):
                return [Encoded(0, prefix + t, [IGNORE] * len(prefix) + t) for t in self.tails]
        rows = label_rows(self.tokenizer, prompt, self.labels)
        if all(_first_label(r) == len(prefix) and r.input_ids[: len(prefix)] == prefix
               and all(x != IGNORE for x in r.labels[len(prefix):]) for r in rows):
            self.tails = [r.input_ids[len(prefix):] for r in rows]
        return rows


def _first_label(row: Encoded) -> int:
    return next((i for i, x in enumerate(row.labels) if x != IGNORE), len(row.labels))


@torch.no_grad()
def _scores(model: torch.nn.Module, rows: list[Encoded], pad: int) -> list[float]:
    """Summed log-probability of each row's labelled tokens, each row computed whole."""
    device = next(model.parameters()).device
    ids, labels, mask = pad_rows(rows, pad)
    logits, targets = labelled_logits(model, labels.to(device), input_ids=ids.to(device), attention_mask=mask.to(device))
    logps = F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return [float(lp.sum()) for lp in logps.split([r.n_labels for r in rows])]


class _Prompt:
    """One prompt's pass: the first answer token's log-probabilities, and its KV cache for the candidates to share."""

    @torch.no_grad()
    def __init__(self, model: torch.nn.Module, prefix: list[int], cached: bool) -> None:
        self.model, self.n = model, len(prefix)
        self.device = next(model.parameters()).device
        ids = torch.tensor([prefix], device=self.device)
        cache = new_cache() if cached else None
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1,
                    **({"cache": cache, "use_cache": True} if cached else {}))
        self.first = F.log_softmax(out.logits[0, -1].float(), dim=-1)
        self.kv = tensors(cache) if cached else None

    @torch.no_grad()
    def scores(self, rows: list[Encoded], start: int, pad: int) -> list[float]:
        """Summed log-probability of each row's trained tokens after the prompt (``start`` on), read after its KV."""
        assert self.kv is not None
        out = [float(self.first[r.input_ids[start]]) for r in rows]  # the first answer token: always trained
        rest = [r.input_ids[start:-1] for r in rows]  # the inputs whose next tokens are scored
        width = max(map(len, rest))
        if width == 0:
            return out
        n = len(rows)
        ids = torch.full((n, width), pad, dtype=torch.long, device=self.device)
        targets = torch.full((n, width), IGNORE, dtype=torch.long, device=self.device)
        for i, (r, x) in enumerate(zip(rows, rest)):  # right-padded: a real token never attends to the padding after it
            ids[i, : len(x)] = torch.tensor(x, device=self.device)
            targets[i, : len(x)] = torch.tensor(r.labels[start + 1:], device=self.device)
        cache = new_cache([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in self.kv])
        logps = F.log_softmax(self.model(input_ids=ids, attention_mask=torch.ones(n, self.n + width, dtype=torch.long, device=self.device),
                                         position_ids=torch.arange(self.n, self.n + width, device=self.device)[None].expand(n, -1),
                                         cache=cache, use_cache=True).logits.float(), dim=-1)
        trained = targets != IGNORE
        picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~trained, 0.0)
        return [o + float(p) for o, p in zip(out, picked.sum(-1))]


def rank_labels(model: torch.nn.Module, tokenizer: Any, prompts: list[list[dict[str, Any]]], labels: list[str], *,
                on_progress: Callable[[int], None] | None = None) -> tuple[list[str], float]:
    """The most probable label after each prompt, and the mean number of labels scored per prompt."""
    labels = list(dict.fromkeys(labels))
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    tails = _Continuations(tokenizer, labels)
    cached = engine_problem(model) is None  # prompt learning prepends virtual tokens: rows are then computed whole
    answers, scored = [], 0
    for prompt in prompts:
        rows = tails.rows(prompt)
        start = _first_label(rows[0])
        shared = None
        if len({tuple(r.input_ids[:start]) for r in rows}) == 1 and all(_first_label(r) == start for r in rows):
            shared = _Prompt(model, rows[0].input_ids[:start], cached)
            bound = [float(shared.first[r.input_ids[start]]) for r in rows]
        else:  # the labels change how the prompt tokenizes: no shared prompt, no bound, every label scored whole
            bound = [0.0] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -bound[i])
        best, best_score, k = 0, float("-inf"), 0
        while k < len(order) and bound[order[k]] > best_score:
            step = FIRST_PASS if k == 0 else ROWS_PER_PASS
            batch = [i for i in order[k : k + step] if bound[i] > best_score]
            if shared is not None and shared.kv is not None:
                got = shared.scores([rows[i] for i in batch], start, pad)
            else:
                got = _scores(model, [rows[i] for i in batch], pad)
            for i, s in zip(batch, got):
                if s > best_score:
                    best, best_score = i, s
            scored, k = scored + len(batch), k + step
        answers.append(labels[best])
        if on_progress:
            on_progress(1)
    return answers, scored / max(len(prompts), 1)
