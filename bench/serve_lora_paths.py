"""How adapter rows are computed, in-process (no HTTP): plain base vs peft vs the server's LoRA bank.

For 1 and 4 rows, each path decodes the same prompt for ``--tokens`` tokens (greedy, EOS ignored), in
interleaved repeats (best kept; the machine is shared); ratios are to the plain base model (what a
merged fine-tune costs):

* ``plain``    the base model alone (= a merged fine-tune's speed)
* ``peft``     peft ``PeftModel`` with one active adapter (what ``tailored chat RUN`` runs)
* ``peft-mix`` peft with ``adapter_names=`` (rows on adapter a, b and the base)
* ``bank``     the server's path for one adapter (engine/lora.py hooks, no mask)
* ``bank-mix`` the server's path for rows on adapter a, b and the base

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/serve_lora_paths.py RUN_A RUN_B
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs=2, help="two LoRA run folders on the same base")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--rows", default="1,4")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tailored.cli.common import quiet

    quiet()

    import tailored
    from tailored.eval.generate import GenerationSettings
    from tailored.serve.decode import Row, TextStream, run_batch
    from tailored.engine.lora import LoraBank

    chat = tailored.load(args.runs[0])  # tokenizer + template of the run; its model is peft-wrapped
    base = tailored.load(chat.manifest.base_model.path).model
    peft = chat.model
    peft.load_adapter(f"{args.runs[1]}/adapter", adapter_name="b")
    first = peft.active_adapter
    bank = LoraBank(base)
    bank.load("a", f"{args.runs[0]}/adapter")
    bank.load("b", f"{args.runs[1]}/adapter")
    prompt = chat.prompt_ids([{"role": "user", "content": "What is the capital of France?"}])

    def rows(n: int, adapters: list[str]) -> list[Row]:
        return [Row(prompt, GenerationSettings(max_new_tokens=args.tokens), TextStream(chat.tokenizer, set(), []),
                    lambda d, f: None, adapter=adapters[i % len(adapters)]) for i in range(n)]

    def plain(n: int) -> None:
        run_batch(base, rows(n, ["__base__"]), 0)

    def peft_one(n: int) -> None:
        peft.set_adapter(first)
        run_batch(peft, rows(n, [first]), 0)

    def peft_mix(n: int) -> None:
        names = [first, "b", "__base__"][:n] if n > 1 else [first]
        r = rows(n, names)
        # peft's mixed path: adapter_names= on every forward (all rows finish together: EOS is ignored)
        forward = peft.forward
        peft.forward = lambda *a, **k: forward(*a, adapter_names=[x.adapter for x in r], **k)
        try:
            run_batch(peft, r, 0)
        finally:
            peft.forward = forward

    def bank_run(adapters: list[str]) -> Callable[[int], None]:
        def go(n: int) -> None:
            r = rows(n, adapters)
            with bank.rows([x.adapter for x in r]) as mixer:
                run_batch(base, r, 0, mixer=mixer)
        return go

    paths = {"plain": plain, "peft": peft_one, "peft-mix": peft_mix, "bank": bank_run(["a"]),
             "bank-mix": bank_run(["a", "b", "__base__"])}
    print(f"LoRA paths · {args.tokens} tokens per row · 1 torch thread · best of {args.repeats}")
    for n in [int(x) for x in args.rows.split(",")]:
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, fn in paths.items():
                start = time.perf_counter()
                fn(n)
                best[name] = min(best.get(name, 1e9), time.perf_counter() - start)
        for name, seconds in best.items():
            print(f"rows {n} · {name:<8} {n * args.tokens / seconds:6.1f} tok/s · {best['plain'] / seconds:4.2f}x plain", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
