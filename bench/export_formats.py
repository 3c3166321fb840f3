"""Export one run in every format and measure each against the unmerged run (the reference).

Prints, per format: write time, size (and ratio to the merged f32 folder), max |Δlogit| against the
unmerged run on a few chat prompts, and whether the greedy answers are identical.

    python bench/export_formats.py                # trains a 4-step LoRA on the embedded SmolLM2 first
    python bench/export_formats.py RUN_DIR        # or measures an existing run
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

PROMPTS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?"]


def make_run(root: Path) -> Path:
    import tailored
    data = root / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Say the number {i}."},
                          {"role": "assistant", "content": f"The number is {i}."}]} for i in range(16)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tailored.train(data=str(data), model="smollm2", max_steps=4, output=str(root / "run"), batch_size=4,
                          max_seq_length=64, learning_rate_multiplier=5).run_dir


@torch.no_grad()
def answers(model: torch.nn.Module, prompts: list[torch.Tensor], stop: list[int]) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy answers (up to the stop token, as a server would return them) and the prompt logits."""
    outs, logits = [], []
    for ids in prompts:
        logits.append(model(ids).logits)
        outs.append(model.generate(input_ids=ids, max_new_tokens=24, do_sample=False, eos_token_id=stop,
                                   pad_token_id=stop[0])[0, ids.shape[1]:].tolist())
    return outs, logits


def main() -> None:
    from transformers import AutoModelForCausalLM

    import tailored
    from tailored.export import export_run

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="tailored-bench-export-"))
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else make_run(root)
    reference = tailored.load(run)
    prompts = [torch.tensor([reference.prompt_ids([{"role": "user", "content": p}])]) for p in PROMPTS]
    ref_out, ref_logits = answers(reference.model, prompts, reference.stop_ids)
    print(f"reference (unmerged run): {[reference.tokenizer.decode(o) for o in ref_out]}")
    merged_size = None
    print(f"{'format':14s} {'write s':>8s} {'MB':>8s} {'size ratio':>10s} {'max|Δlogit|':>12s} {'greedy same':>12s}")
    for fmt, dtype in (("merged", "f32"), ("merged", "bf16"), ("adapter", None), ("gguf", "f32"), ("gguf", "f16"), ("gguf", "q8_0")):
        out = root / f"{fmt}-{dtype}"
        result = export_run(run, out, format=fmt, dtype=dtype)
        size = result.size_bytes
        merged_size = merged_size or size
        delta, same = "-", "-"
        if fmt != "adapter":
            if fmt == "gguf":
                model = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=result.main_file.name, dtype=torch.float32)
            else:
                model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
            got_out, got_logits = answers(model, prompts, reference.stop_ids)
            delta = f"{max((a - b).abs().max().item() for a, b in zip(ref_logits, got_logits)):.4f}"
            same = f"{sum(a == b for a, b in zip(ref_out, got_out))}/{len(prompts)}"
            for a, b in zip(ref_out, got_out):
                if a != b:
                    print(f"  differs: {reference.tokenizer.decode(a)!r} vs {reference.tokenizer.decode(b)!r}")
        label = f"{fmt} {result.dtype}"
        print(f"{label:14s} {result.seconds:8.1f} {size / 1e6:8.1f} {size / merged_size:10.3f} {delta:>12s} {same:>12s}")


if __name__ == "__main__":
    main()
