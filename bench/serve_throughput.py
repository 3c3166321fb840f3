"""Serving throughput: base, merged fine-tune, unmerged LoRA adapter, and mixed adapters, 1/4/16 clients.

Real servers (uvicorn on 127.0.0.1, built-in engine) and the official openai SDK in client threads.
Each request generates exactly ``--max-tokens`` tokens (``ignore_eos``) so every configuration does the
same work. The reference is the merged fine-tune (the LoRA folded into the base weights and served as
a plain base); the ratios say what serving unmerged adapters costs.

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/serve_throughput.py            # trains two tiny runs first
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/serve_throughput.py --runs A B  # or reuse two LoRA runs
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain what a CPU does.",
           "Give me three tips for sleeping well.", "What is 12 times 7?", "Name a famous painter.",
           "How do plants make food?", "Suggest a name for a cat."]


def train_runs(folder: Path, steps: int) -> list[Path]:
    import tailored

    out = []
    for name, answer in [("support-a", "Thanks for reaching out! Your refund is on its way."),
                         ("support-b", "I am sorry, I cannot help with that request.")]:
        data = folder / f"{name}.jsonl"
        rng = random.Random(0)
        rows = [{"messages": [{"role": "user", "content": rng.choice(PROMPTS) + f" ({i})"},
                              {"role": "assistant", "content": answer}]} for i in range(16)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tailored.train(data=str(data), model="smollm2", max_steps=steps, batch_size=4, max_seq_length=96, threads=1, red_flags="off",
                       output=str(folder / name))
        out.append(folder / name)
    return out


def merge(run: Path, folder: Path) -> Path:
    """The run's LoRA folded into the base (``tailored export --format merged``)."""
    from tailored.export.run import export_run

    export_run(run, folder, format="merged")
    return folder


def measure(client_for: dict, models: list[str], clients: int, per_client: int, max_tokens: int) -> dict:
    """``clients`` threads, each sending ``per_client`` requests; request j of client i asks models[(i + j) % len]."""
    latencies: list[float] = []
    tokens = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(per_client):
            model = models[(i + j) % len(models)]
            client = client_for[model]
            start = time.perf_counter()
            out = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPTS[(i + j) % len(PROMPTS)]}],
                max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True})
            with lock:
                latencies.append(time.perf_counter() - start)
                tokens[0] += out.usage.completion_tokens

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"tok_s": tokens[0] / wall, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))], "tokens": tokens[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs=2, default=None, help="two LoRA run folders on the embedded model")
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=8, help="requests per configuration and client count (at least one per client)")
    ap.add_argument("--batch-wait-ms", type=float, default=50.0,
                    help="scheduler wait; long enough that simultaneous clients land in one batch")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best is kept (the machine is shared)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tailored.cli.common import quiet

    quiet()
    import openai

    from tailored.serve.server import start

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    runs = [Path(r) for r in args.runs] if args.runs else train_runs(work, args.train_steps)
    merged = merge(runs[0], work / "merged")
    shared = start(base="smollm2", runs=[str(r) for r in runs], max_batch=16, batch_wait_ms=args.batch_wait_ms)
    flat = start(base=str(merged), max_batch=16, batch_wait_ms=args.batch_wait_ms)
    ids = {e.run_dir.name if e.run_dir else "base": e.id for e in shared.built.registry.models()}
    a, b = ids[runs[0].name], ids[runs[1].name]
    merged_id = flat.built.registry.base.id
    clients = {s.url: openai.OpenAI(base_url=s.url, api_key="x", max_retries=0) for s in (shared, flat)}
    client_for = {m: clients[shared.url] for m in (ids["base"], a, b)} | {merged_id: clients[flat.url]}
    configs = {"base": [ids["base"]], "merged": [merged_id], "adapter": [a], "mixed": [a, b, ids["base"]]}
    for models in configs.values():  # warm-up: loads adapters, first-call overheads
        measure(client_for, models, len(models), 1, 4)
    print(f"serve throughput · embedded model · max_tokens {args.max_tokens} · {torch.get_num_threads()} torch thread(s) · "
          f"batch wait {args.batch_wait_ms:g} ms · best of {args.repeats} interleaved repeats")
    results: dict[tuple[str, int], dict] = {}
    for c in [int(x) for x in args.clients.split(",")]:
        per_client = max(1, args.requests // c)
        for _ in range(args.repeats):
            for name, models in configs.items():
                r = measure(client_for, models, c, per_client, args.max_tokens)
                best = results.get((name, c))
                if best is None or r["tok_s"] > best["tok_s"]:
                    results[(name, c)] = r
        ref = results[("merged", c)]["tok_s"]
        for name in configs:
            r = results[(name, c)]
            print(f"clients {c:>2} · {name:<8} {r['tok_s']:7.1f} tok/s · p50 {r['p50']:6.2f}s · p95 {r['p95']:6.2f}s · "
                  f"{r['tok_s'] / ref:4.2f}x merged", flush=True)
    print("engine stats (shared base):", shared.built.engine.stats)
    shared.stop()
    flat.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
