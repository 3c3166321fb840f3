"""transformers' own continuous batching (``generate_batch``, paged attention) against tailored's step engine, on CPU.

The same 16 prompts (mixed lengths), 16 greedy tokens each, the embedded model, one process: first
``model.generate_batch`` with a bounded paged cache (its defaults size the cache from free memory:
on CPU that was 12 GiB RSS for these 16 prompts), then :class:`tailored.engine.core.StepEngine`.
Prints tokens/s of each and the ratio. transformers' manager has no per-request LoRA adapter (peft's
``adapter_names`` does not reach it), which the server needs for mixed-adapter batches.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/hf_continuous_batching.py
"""

from __future__ import annotations

import sys
import time

import torch


def main() -> int:
    torch.set_num_threads(1)
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from tailored.cli.common import quiet
    from tailored.engine.core import StepEngine, run
    from tailored.engine.sampling import GenerationSettings, Row
    from tailored.engine.text import TextStream
    from tailored.models.load import load_model, load_tokenizer, local_folder

    quiet()
    folder = local_folder("smollm2")
    model, tok = load_model(folder).eval(), load_tokenizer(folder)
    prompts = [tok(f"Question {i}: explain what a CPU does " * (1 + i % 4), add_special_tokens=False)["input_ids"]
               for i in range(16)]
    config = GenerationConfig(max_new_tokens=16, do_sample=False, eos_token_id=-1, pad_token_id=tok.pad_token_id or 0)
    paged = ContinuousBatchingConfig(num_blocks=64, page_size=64, max_batch_tokens=256, max_requests_per_batch=16)
    start = time.perf_counter()
    out = model.generate_batch(prompts, generation_config=config, continuous_batching_config=paged, warmup=False)
    hf_s = time.perf_counter() - start
    hf_tokens = sum(len(o.generated_tokens) for o in out.values())
    rows = [Row(p, GenerationSettings(max_new_tokens=16, ignore_eos=True), TextStream(tok, set(), []), lambda t, f: None)
            for p in prompts]
    start = time.perf_counter()
    run(StepEngine(model, max_rows=16), rows)
    ours_s = time.perf_counter() - start
    ours_tokens = sum(r.stream.count for r in rows)
    print(f"transformers generate_batch {hf_tokens / hf_s:6.1f} tok/s ({hf_tokens} tokens, {hf_s:.1f}s)")
    print(f"tailored StepEngine         {ours_tokens / ours_s:6.1f} tok/s ({ours_tokens} tokens, {ours_s:.1f}s) · "
          f"{(ours_tokens / ours_s) / (hf_tokens / hf_s):4.2f}x transformers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
