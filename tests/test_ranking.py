"""Ranking the label set: the answer is the exact most probable whole label, however few labels are scored."""

from __future__ import annotations

import random

import pytest
import torch

from tailored.data.records import Example
from tailored.data.tokenize import IGNORE, encode_example
from tailored.eval.ranking import rank_labels
from tailored.testing.tiny import WORDS, tiny_model, tiny_tokenizer

# shared first tokens and labels that are prefixes of others: the cases a bound on the first token must get right
LABELS = ["bug", "bug crash", "billing", "billing refund", "login", "login password", "shipping", "order delivery", "neutral"]


def asked(labels: list[str], seed: int, system: bool) -> list[list[dict[str, str]]]:
    """Prompts that start with their label (what the fitted model learns), then some that name none."""
    rng = random.Random(seed)
    head = [{"role": "system", "content": "Reply with one label."}] if system else []
    words = lambda n: " ".join(rng.choice(WORDS[:40]) for _ in range(n))  # noqa: E731
    return [[*head, {"role": "user", "content": f"{label} {words(3)}"}] for label in labels for _ in range(2)] + \
        [[*head, {"role": "user", "content": words(rng.randint(2, 6))}] for _ in range(6)]


@torch.no_grad()
def brute_force(model: torch.nn.Module, tokenizer, prompt, labels: list[str]) -> str:
    """Every label scored whole, with the full logits: the answer ranking must give."""
    best, best_score = None, float("-inf")
    for label in labels:
        row = encode_example(tokenizer, Example(0, [*prompt, {"role": "assistant", "content": label}]))
        logits = model(input_ids=torch.tensor([row.input_ids])).logits[0, -len(row.input_ids):]
        logps = torch.log_softmax(logits.float(), -1)
        score = sum(float(logps[t - 1, row.labels[t]]) for t in range(1, len(row.labels)) if row.labels[t] != IGNORE)
        if score > best_score:
            best, best_score = label, score
    return best


def fitted(tokenizer, labels: list[str], *, system: bool = False, steps: int = 120) -> torch.nn.Module:
    """A tiny model trained (plain Adam, assistant tokens only) to answer the label a prompt starts with."""
    from tailored.data.batching import pad_rows
    from tailored.train.forward import labelled_logits

    train = asked(labels, seed=0, system=system)
    rows = [encode_example(tokenizer, Example(0, [*p, {"role": "assistant", "content": label}]))
            for p, label in zip(train, [lab for lab in labels for _ in range(2)])]
    model = tiny_model(tokenizer, seed=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ids, targets_in, mask = pad_rows(rows, int(tokenizer.pad_token_id))
    for _ in range(steps):
        logits, targets = labelled_logits(model, targets_in, input_ids=ids, attention_mask=mask)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("template", ["chatml", "zephyr"])
def test_ranking_answers_the_most_probable_whole_label(template: str) -> None:
    tok = tiny_tokenizer(template)
    system = template == "chatml"
    model = fitted(tok, LABELS, system=system)
    prompts = asked(LABELS, seed=1, system=system)
    answers, scored = rank_labels(model, tok, prompts, LABELS)
    assert answers == [brute_force(model, tok, p, LABELS) for p in prompts]
    assert len(set(answers)) > 3  # a model that answers one label everywhere would test nothing
    assert scored < len(LABELS) / 2  # the first-token bound spared most labels


def test_ranking_a_prompt_tuned_model_scores_whole_rows() -> None:
    from peft import PromptTuningConfig, get_peft_model

    tok = tiny_tokenizer()
    model = get_peft_model(fitted(tok, LABELS), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    prompts = asked(LABELS, seed=1, system=False)
    answers, _ = rank_labels(model, tok, prompts, LABELS)
    assert answers == [brute_force(model, tok, p, LABELS) for p in prompts]
    assert len(set(answers)) > 3


def test_the_cached_and_the_whole_row_scores_count_the_same_tokens() -> None:
    """Both scorers sum only the trained tokens after the prompt (the cached one once summed every token there, an
    untrained one too, unlike training and the whole-row scorer)."""
    from tailored.data.tokenize import Encoded
    from tailored.eval.ranking import _Prompt, _scores

    tok = tiny_tokenizer()
    model = fitted(tok, LABELS, steps=20)
    prompt = asked(LABELS, seed=1, system=False)[0]
    rows = [encode_example(tok, Example(0, [*prompt, {"role": "assistant", "content": label}])) for label in LABELS[:4]]
    start = next(i for i, x in enumerate(rows[0].labels) if x != IGNORE)
    rows = [rows[0], *[Encoded(0, r.input_ids, r.labels[:start + 1] + [IGNORE] + r.labels[start + 2:]) for r in rows[1:]]]
    cached = _Prompt(model, rows[0].input_ids[:start], cached=True).scores(rows, start, int(tok.pad_token_id))
    assert cached == pytest.approx(_scores(model, rows, int(tok.pad_token_id)), abs=1e-4)
