"""Serving throughput, time to first token and latency: plain HF generate, the static engine, the step engine.

One run, same machine, the embedded model, mixed prompt and answer lengths, 1/4/16/64 closed-loop
clients (each sends its next request when the previous is answered):

* ``hf-single``   transformers ``generate``, one request at a time (offline, base only);
* ``hf-batched``  transformers ``generate`` on batches of up to 16 waiting requests (offline, base only;
                  a batch generates as long as its longest answer);
* ``static``      ``tailored serve --batching static``: today's engine before this change (a batch runs to
                  its end; requests arriving meanwhile wait);
* ``engine``      ``tailored serve`` (continuous batching, chunked prefill, prefix cache).

The servers run behind real HTTP (uvicorn) with the official openai SDK streaming, for base, one
adapter and mixed adapters (two LoRA runs + base). Every request generates exactly its ``max_tokens``
(``ignore_eos``), so every system does the same work. Then the prefix cache: a banking77 zero-shot
evaluation with the 77 labels in the system prompt, through ``ChatModel.generate_batch`` (what
``tailored eval`` uses), cached vs uncached: answers must be identical, the speed-up is printed.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/serve_throughput.py            # trains two tiny runs first
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/serve_throughput.py --runs A B  # or reuse two LoRA runs
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

ROOT = Path(__file__).resolve().parents[1]
BANKING = ROOT.parent / "shared" / "data" / "banking77"
SHORT = ["What is the capital of France?", "Write a haiku about the sea.", "What is 12 times 7?", "Name a famous painter."]
LONG = ("I have been a customer for many years and recently noticed that my statements look different. "
        "The monthly summary now lists transfers in another order, some fees appear twice, and the app "
        "shows a balance that does not match the paper statement I received last week. ")
ANSWERS = [2, 4, 8, 12]  # max_tokens, cycled: mixed answer lengths


def workload(n: int) -> list[tuple[str, int]]:
    """``n`` requests (prompt, max_tokens): short and long prompts, short and long answers, deterministic."""
    rng = random.Random(n)
    out = []
    for i in range(n):
        prompt = rng.choice(SHORT) if i % 3 else LONG * (1 + i % 2) + rng.choice(SHORT)
        out.append((prompt, ANSWERS[(i * 7 + i // 4) % len(ANSWERS)]))
    return out


def summary(tokens: int, wall: float, latencies: list[float], ttfts: list[float]) -> dict:
    latencies.sort()
    return {"tok_s": tokens / wall, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
            "ttft": statistics.median(ttfts) if ttfts else None}


def measure_server(client, models: list[str], clients: int, requests: list[tuple[str, int]]) -> dict:
    """``clients`` threads share ``requests``; request k asks models[k % len(models)], streaming."""
    latencies: list[float] = []
    ttfts: list[float] = []
    tokens = [0]
    lock = threading.Lock()
    queue = list(enumerate(requests))
    barrier = threading.Barrier(clients)

    def worker() -> None:
        barrier.wait()
        while True:
            with lock:
                if not queue:
                    return
                k, (prompt, max_tokens) = queue.pop(0)
            start = time.perf_counter()
            first = None
            stream = client.chat.completions.create(
                model=models[k % len(models)], messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                temperature=0, stream=True, extra_body={"ignore_eos": True})
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
            with lock:
                latencies.append(time.perf_counter() - start)
                ttfts.append(first if first is not None else latencies[-1])
                tokens[0] += max_tokens

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(tokens[0], time.perf_counter() - start, latencies, ttfts)


def measure_hf(chat, requests: list[tuple[str, int]], batch: int) -> dict:
    """transformers ``generate`` on ``requests`` in arrival order, ``batch`` at a time; latency from the start."""
    from tailored.eval.generate import GenerationSettings

    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(0, len(requests), batch):
        group = requests[i : i + batch]
        settings = GenerationSettings(max_new_tokens=max(t for _, t in group), ignore_eos=True)
        chat.hf_generate_batch([[{"role": "user", "content": p}] for p, _ in group], settings)
        latencies += [time.perf_counter() - start] * len(group)
    return summary(sum(t for _, t in requests), time.perf_counter() - start, latencies, [])


def train_runs(folder: Path, steps: int) -> list[Path]:
    import tailored

    out = []
    for name, answer in [("support-a", "Thanks for reaching out! Your refund is on its way."),
                         ("support-b", "I am sorry, I cannot help with that request.")]:
        data = folder / f"{name}.jsonl"
        rng = random.Random(0)
        rows = [{"messages": [{"role": "user", "content": rng.choice(SHORT) + f" ({i})"},
                              {"role": "assistant", "content": answer}]} for i in range(16)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tailored.train(data=str(data), model="smollm2", max_steps=steps, batch_size=4, max_seq_length=96, threads=1,
                       red_flags="off", output=str(folder / name))
        out.append(folder / name)
    return out


def prefix_bench(chat, n: int) -> None:
    """Banking77 zero-shot with the label list in the system prompt: cached vs uncached prefill."""
    if not BANKING.is_dir():
        print(f"prefix cache: skipped ({BANKING} is missing)")
        return
    from tailored.eval.generate import GenerationSettings

    labels = json.loads((BANKING / "labels.json").read_text())
    rows = [json.loads(line) for line in (BANKING / "validation.jsonl").read_text().splitlines()[:n]]
    listed = "Reply with exactly one of these labels and nothing else: " + ", ".join(labels) + "."
    conversations = [[{"role": "system", "content": r["messages"][0]["content"] + " " + listed},
                      {"role": "user", "content": r["messages"][1]["content"]}] for r in rows]
    settings = GenerationSettings(max_new_tokens=8)
    prompt = len(chat.prompt_ids(conversations[0]))
    timings, answers = {}, {}
    for name, cached in (("uncached", False), ("cached", True)):  # the cache starts empty: the first prompt fills it
        start = time.perf_counter()
        answers[name] = chat.generate_batch(conversations, settings, max_rows=8, prefix_cache=cached)
        timings[name] = time.perf_counter() - start
    same = answers["cached"] == answers["uncached"]
    print(f"prefix cache · banking77 zero-shot · {n} questions · prompt {prompt} tokens · 8 new tokens · "
          f"uncached {timings['uncached']:.1f}s · cached {timings['cached']:.1f}s · "
          f"speed-up {timings['uncached'] / timings['cached']:.2f}x · answers identical: {same}", flush=True)


def row(name: str, c: int, r: dict, ref: dict | None = None) -> str:
    ttft = f"{r['ttft']:6.2f}s" if r["ttft"] is not None else "    n/a"
    out = f"clients {c:>2} · {name:<18} {r['tok_s']:7.1f} tok/s · ttft p50 {ttft} · p50 {r['p50']:6.2f}s · p99 {r['p99']:6.2f}s"
    if ref is not None:
        out += f" · {r['tok_s'] / ref['tok_s']:4.2f}x static tok/s"
        if r["ttft"] is not None and ref["ttft"]:
            out += f" · {r['ttft'] / ref['ttft']:4.2f}x static ttft"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs=2, default=None, help="two LoRA run folders on the embedded model")
    ap.add_argument("--train-steps", type=int, default=1)
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--requests", default="2,4,16,64", help="requests per client count (shared by its clients)")
    ap.add_argument("--prefix-questions", type=int, default=6)
    ap.add_argument("--batch-wait-ms", type=float, default=20.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tailored.cli.common import quiet

    quiet()
    import openai

    from tailored.eval.generate import load
    from tailored.serve.server import start

    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    runs = [Path(r) for r in args.runs] if args.runs else train_runs(work, args.train_steps)
    print(f"runs: {' '.join(map(str, runs))}", flush=True)
    common = {"base": "smollm2", "runs": [str(r) for r in runs], "max_batch": 16, "batch_wait_ms": args.batch_wait_ms,
              "queue_size": 256, "jobs": False}
    servers = {"static": start(batching="static", **common), "engine": start(**common)}
    ids = {e.run_dir.name if e.run_dir else "base": e.id for e in servers["engine"].built.registry.models()}
    configs = {"base": [ids["base"]], "adapter": [ids[runs[0].name]], "mixed": [ids[runs[0].name], ids[runs[1].name], ids["base"]]}
    sdk = {name: openai.OpenAI(base_url=s.url, api_key="x", max_retries=0, timeout=600) for name, s in servers.items()}
    for name in servers:  # warm-up: adapters loaded, first-call overheads paid
        for models in configs.values():
            measure_server(sdk[name], models, len(models), workload(len(models)))
    chat = load("smollm2")
    measure_hf(chat, workload(2), 2)
    print(f"serve throughput · embedded model · answers {ANSWERS} tokens · prompts ~10 and ~60/120 tokens · "
          f"{torch.get_num_threads()} torch thread · max_batch 16 · batch wait {args.batch_wait_ms:g} ms", flush=True)
    results: dict = {}
    for c, n in zip([int(x) for x in args.clients.split(",")], [int(x) for x in args.requests.split(",")]):
        requests = workload(max(n, c))
        if not results:  # one request at a time: the same throughput whatever the number of clients
            results["hf-single"] = r = measure_hf(chat, workload(4), 1)
            print(row("hf-single base", 1, r) + " (4 requests, one at a time: its tok/s for any number of clients)",
                  flush=True)
        results[("hf-batched", c)] = r = measure_hf(chat, requests, min(c, 16))
        print(row("hf-batched base", c, r), flush=True)
        for config, models in configs.items():
            for name in ("static", "engine"):
                results[(name, config, c)] = r = measure_server(sdk[name], models, c, requests)
                ref = results[("static", config, c)] if name == "engine" else None
                print(row(f"{name} {config}", c, r, ref), flush=True)
        e = results[("engine", "base", c)]["tok_s"]
        print(f"clients {c:>2} · engine mixed / engine base {results[('engine', 'mixed', c)]['tok_s'] / e:4.2f}x · "
              f"engine base / hf-batched {e / results[('hf-batched', c)]['tok_s']:4.2f}x · "
              f"engine base / hf-single {e / results['hf-single']['tok_s']:4.2f}x", flush=True)
    print("engine stats:", servers["engine"].built.engine.stats, flush=True)
    for s in servers.values():
        s.stop()
    prefix_bench(chat, args.prefix_questions)
    print(f"total {time.perf_counter() - began:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
