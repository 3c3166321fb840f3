"""Loss on exactly the labelled tokens, without computing logits anywhere else.

The vocabulary projection is the most expensive part of a small model's step (49k × 576 for
SmolLM2) and the seed recipe computes it at every position, prompts and padding included. We capture
the final hidden states with a forward hook on the decoder's last norm, ask the model for a single
position of logits, and project only the positions that carry a label.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from tailored.data.batching import MicroBatch
from tailored.data.tokenize import IGNORE

_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm")


def _final_norm(model: torch.nn.Module) -> torch.nn.Module | None:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for name in _NORM_NAMES:
        module = getattr(decoder, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


@contextmanager
def _capture(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    box: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: box.append(out[0] if isinstance(out, tuple) else out))
    try:
        yield box
    finally:
        handle.remove()


def labelled_logits(model: torch.nn.Module, labels: torch.Tensor, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, targets)`` at the positions whose next token is labelled (not ``IGNORE``), in row-major order.

    The final hidden states are captured with a hook on the decoder's last norm while the model is asked
    for a single position of logits; only the labelled positions go through the vocabulary projection.
    ``model`` may be DDP- or peft-wrapped; an unknown architecture falls back to the full logits.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE  # position t predicts token t + 1
    inner = model.module if hasattr(model, "module") and not hasattr(model, "get_decoder") else model
    norm = _final_norm(inner)
    if norm is None:
        return model(**inputs).logits[:, :-1][keep], targets[keep]
    with _capture(norm) as box:
        model(**inputs, logits_to_keep=1)
    hidden = box[-1][:, -labels.shape[1] :]  # prompt tuning prepends virtual tokens
    head = inner.get_output_embeddings()
    # under mixed precision the hidden states come out of autocast in bf16; the head is called
    # outside the model's forward, so match its dtype explicitly
    return head(hidden[:, :-1][keep].to(head.weight.dtype)), targets[keep]


@dataclass
class TokenLoss:
    loss_sum: torch.Tensor  # summed cross-entropy over labelled tokens (differentiable)
    n_tokens: int
    n_correct: int


def model_inputs(batch: MicroBatch, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The forward pass's keyword arguments for a micro-batch (packed: positions and no attention mask)."""
    kwargs: dict[str, Any] = {"input_ids": batch.input_ids.to(device), "use_cache": False}
    if batch.attention_mask is not None:
        kwargs["attention_mask"] = batch.attention_mask.to(device)
    if batch.position_ids is not None:
        kwargs["position_ids"] = batch.position_ids.to(device)
    return kwargs


def token_loss(model: torch.nn.Module, batch: MicroBatch, *, device: torch.device | str = "cpu") -> TokenLoss:
    """Summed next-token loss over the labelled positions of one micro-batch."""
    logits, target = labelled_logits(model, batch.labels.to(device), **model_inputs(batch, device))
    loss_sum = F.cross_entropy(logits.float(), target, reduction="sum")
    n_correct = int((logits.argmax(-1) == target).sum())
    return TokenLoss(loss_sum, int(target.numel()), n_correct)
