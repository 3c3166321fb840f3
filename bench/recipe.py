"""The seed recipe the benchmarks compare against: HF ``Trainer`` + PEFT LoRA r=8 on q_proj/v_proj, batches padded
to the longest, labels = input_ids with only the pads masked (prompt tokens trained on). Written once, here."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any


def recipe_parts(data: Path, folder: Path, threads: int) -> tuple[Any, Any, list[list[int]], Any, dict[str, int]]:
    """(the LoRA model, its tokenizer, the encoded examples, the collator, its real/padded token counts)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tailored.models.load import load_model, load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer(folder)
    model = get_peft_model(load_model(folder), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                          target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    encoded = [tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"][:1024]
               for r in rows]
    stats = {"real": 0, "padded": 0}

    def collate(batch: list[list[int]]) -> dict:
        width = max(len(b) for b in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b)] = torch.tensor(b)
            mask[i, : len(b)] = 1
        labels = ids.clone()
        labels[mask == 0] = -100
        stats["real"] += int(mask.sum())
        stats["padded"] += int(mask.numel())
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return model, tok, encoded, collate, stats


def recipe_arguments(**changes: Any) -> Any:
    """``TrainingArguments`` at the Trainer's defaults (CPU, no saving or logging), with ``changes``."""
    from transformers import TrainingArguments

    return TrainingArguments(**{"output_dir": tempfile.mkdtemp(), "logging_steps": 10**6, "save_strategy": "no",
                                "report_to": [], "use_cpu": True, "dataloader_num_workers": 0, "disable_tqdm": True,
                                "remove_unused_columns": False, **changes})
