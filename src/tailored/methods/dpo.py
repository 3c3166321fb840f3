"""DPO: learn from preference pairs (a preferred and a non-preferred answer to the same prompt).

Direct Preference Optimization (Rafailov et al., 2023) raises the log-probability margin of the
preferred answer over the non-preferred one, measured against a frozen reference model:

    loss = -log σ(β · [(log π(y⁺|x) − log π_ref(y⁺|x)) − (log π(y⁻|x) − log π_ref(y⁻|x))])

The policy is the base with LoRA; the reference is the same model with the LoRA switched off
(peft's ``disable_adapter()``), so no second copy of the model is held in memory. Data is OpenAI's
DPO format (``input`` + ``preferred_output`` + ``non_preferred_output``, ``format: preference``).
The logged "loss" is the DPO loss (log 2 ≈ 0.693 before training) and "token_accuracy" the share of
pairs ranked correctly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from tailored.data.batching import pad_rows
from tailored.data.records import Example
from tailored.data.tokenize import (
    IGNORE,
    Encoded,
    EncodeStats,
    check_stops,
    encode_example,
)
from tailored.errors import DataError
from tailored.methods.base import Footprint, Serving, register
from tailored.methods.lora import LoraOptions, lora_config, lora_footprint
from tailored.methods.objective import ObjectiveLoss
from tailored.methods.peft_common import PeftMethod
from tailored.models.shapes import ModelShape


class DpoOptions(LoraOptions):
    dpo_beta: float = Field(0.1, gt=0, description="DPO temperature: higher keeps the model closer to the base.")


@dataclass
class Pair:
    line: int
    chosen: Encoded
    rejected: Encoded

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))


@dataclass
class PairBatch:
    input_ids: torch.Tensor  # chosen rows first, then rejected rows
    labels: torch.Tensor
    attention_mask: torch.Tensor
    n_pairs: int

    @property
    def n_labels(self) -> int:  # the loss is a mean over pairs
        return self.n_pairs

    @property
    def n_real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def _cut(enc: Encoded, n: int) -> Encoded:
    return Encoded(enc.line, enc.input_ids[:n], enc.labels[:n])


def _sequence_logps(model: torch.nn.Module, batch: PairBatch, device: torch.device | str) -> torch.Tensor:
    """Summed log-probability of each row's labelled tokens."""
    ids, labels = batch.input_ids.to(device), batch.labels.to(device)
    logits = model(input_ids=ids, attention_mask=batch.attention_mask.to(device), use_cache=False).logits[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logps = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logps * keep).sum(-1)


class DpoObjective:
    """Encodes pairs, batches them chosen-and-rejected together, and scores them with the DPO loss."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def encode(self, tokenizer: Any, examples: Iterable[Example], *, max_seq_length: int,
               overlength: str = "drop") -> tuple[list[Pair], EncodeStats]:
        stats, out, checked = EncodeStats(), [], False
        for ex in examples:
            if ex.chosen is None or ex.rejected is None:
                raise DataError(f"line {ex.line}: DPO needs preference pairs (input, preferred_output, non_preferred_output)",
                                hint="convert the data to OpenAI's DPO format, or set format: preference")
            chosen = encode_example(tokenizer, Example(ex.line, messages=ex.messages + ex.chosen, tools=ex.tools))
            rejected = encode_example(tokenizer, Example(ex.line, messages=ex.messages + ex.rejected, tools=ex.tools))
            if not checked and chosen.n_labels:
                check_stops(tokenizer, chosen)
                checked = True
            longest = max(len(chosen), len(rejected))
            if longest > max_seq_length:
                if overlength == "error":
                    raise DataError(f"line {ex.line}: {longest} tokens, more than max_seq_length={max_seq_length}",
                                    hint="raise max_seq_length or set overlength: drop|truncate")
                if overlength == "drop":
                    stats.dropped_too_long.append((ex.line, longest))
                    continue
                stats.truncated.append((ex.line, longest))
                chosen, rejected = _cut(chosen, max_seq_length), _cut(rejected, max_seq_length)
            if not chosen.n_labels or not rejected.n_labels:
                stats.dropped_no_labels.append(ex.line)
                continue
            out.append(Pair(ex.line, chosen, rejected))
        stats.kept = len(out)
        return out, stats

    def batches(self, rows: Sequence[Pair], *, pad_id: int, micro_batch_tokens: int, strategy: str = "bucket",
                max_seq_length: int = 2048) -> list[PairBatch]:
        # Pairs are always padded (never packed): both answers must share one forward pass's positions.
        out, cur = [], []
        for pair in sorted(rows, key=len):
            if cur and 2 * len(pair) * (len(cur) + 1) > micro_batch_tokens:
                out.append(_pad(cur, pad_id))
                cur = []
            cur.append(pair)
        if cur:
            out.append(_pad(cur, pad_id))
        return out

    def loss(self, model: torch.nn.Module, batch: PairBatch, *, device: torch.device | str = "cpu") -> ObjectiveLoss:
        peft_model = getattr(model, "module", model)  # unwrap DDP
        n = batch.n_pairs
        policy = _sequence_logps(model, batch, device)
        with torch.no_grad(), peft_model.disable_adapter():  # the reference: the base, same weights in memory
            reference = _sequence_logps(peft_model, batch, device)
        margin = (policy[:n] - reference[:n]) - (policy[n:] - reference[n:])
        losses = -F.logsigmoid(self.beta * margin)
        return ObjectiveLoss(losses.sum(), n, int((margin > 0).sum()))


def _pad(pairs: list[Pair], pad_id: int) -> PairBatch:
    ids, labels, mask = pad_rows([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    return PairBatch(ids, labels, mask, len(pairs))


class Dpo(PeftMethod):
    name: ClassVar[str] = "dpo"
    summary: ClassVar[str] = "LoRA trained on preference pairs with the DPO loss (reference = base, adapters off)"
    when: ClassVar[str] = "you have pairs of better/worse answers (after SFT), to steer tone, safety or format"
    base_learning_rate: ClassVar[float] = 5e-5
    Options: ClassVar[type[BaseModel]] = DpoOptions
    trains_on: ClassVar[str] = "preference"

    def serving(self, options: BaseModel) -> Serving:
        return Serving("shared_lora")  # a plain LoRA once trained

    def objective(self, options: BaseModel) -> DpoObjective:
        return DpoObjective(beta=options.dpo_beta)  # type: ignore[attr-defined]

    def peft_config(self, options: BaseModel) -> Any:
        return lora_config(options)  # type: ignore[arg-type]

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        return lora_footprint(shape, options)  # type: ignore[arg-type]  # the policy's LoRA; the reference is the base


register(Dpo())
