"""Soak test of ``tailored serve``: many concurrent clients for a fixed time against a real server process.

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/soak_serve.py                      # tiny model, 64 clients, 60 s
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/soak_serve.py --duration 30
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/soak_serve.py --model smollm2 --clients 16 --duration 120

The server is ``python -m tailored.cli.main serve`` in its own process (so its memory is its own), with
an API key, on 127.0.0.1; it serves a base model and two LoRA adapters trained here first (a few steps:
only their being different adapters matters). Each client, an ``openai.AsyncOpenAI`` with strict
response validation, loops until the time is up: a random model of the three, streaming or not, random
``max_tokens`` and temperature. On purpose, a few requests are invalid (expected 400s: a seed beyond 64
bits, messages far over the context) and a few streaming clients hang up after their first token (the
server must free their rows). A 429 (the queue is full: ``--queue-size`` is smaller than the number of
clients, so this path is exercised) makes a client wait ``retry-after`` and go on.

Printed: requests completed, answers by status, p50/p99 latency and time to the first token's text
(streams; an answer that is empty from the start counts its whole time), the
server's resident memory over the run and its peak (VmHWM), and its counters (``/v1/stats``). Exits 1 on
any 5xx, any lost request (no answer, an error that is not an HTTP status, a stream without its finish),
any unexpected 4xx, or rows or requests still held by the server after the clients stop.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEY = "soak-key"
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain what a CPU does.",
           "Give me three tips for sleeping well.", "What is 12 times 7?", "Name a famous painter.",
           "How do plants make food?", "Suggest a name for a cat.", "have each way from", "the water and the way"]


def train_adapters(work: Path, model: str, steps: int) -> tuple[str, Path]:
    """(base model spec, folder holding two LoRA runs) -- the tiny random model is written here first."""
    import tailored

    if model == "tiny":
        from tailored.testing.tiny import save_tiny_model

        model = str(save_tiny_model(work / "tiny-model"))
    runs = work / "runs"
    for name, answer in [("support-a", "Thanks for reaching out! Your refund is on its way."),
                         ("support-b", "I am sorry, I cannot help with that request.")]:
        rng = random.Random(name)
        rows = [{"messages": [{"role": "user", "content": rng.choice(PROMPTS) + f" ({i})"},
                              {"role": "assistant", "content": answer}]} for i in range(16)]
        data = work / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tailored.train(data=str(data), model=model, method="lora", max_steps=steps, batch_size=4, max_seq_length=96,
                       threads=1, red_flags="off", output=str(runs / name),
                       **({"learning_rate_multiplier": 300} if model != "smollm2" else {}))
    return model, runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


class Tally:
    def __init__(self) -> None:
        self.status: collections.Counter[str] = collections.Counter()
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.lost: list[str] = []
        self.unexpected: list[str] = []
        self.abandoned = 0
        self.tokens = 0


async def client_loop(i: int, url: str, models: list[str], deadline: float, tally: Tally, args: argparse.Namespace) -> None:
    import openai

    rng = random.Random(i)
    client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=args.request_timeout,
                                _strict_response_validation=True)
    while time.monotonic() < deadline:
        model = rng.choice(models)
        stream = rng.random() < 0.5
        bad = rng.random() < args.bad_fraction
        kwargs: dict[str, Any] = {"model": model, "max_tokens": rng.randint(4, args.max_tokens),
                                  "temperature": rng.choice([0.0, 0.7, 1.0]),
                                  "messages": [{"role": "user", "content": rng.choice(PROMPTS)}]}
        if bad:  # invalid on purpose: must be a 400, and must not disturb anyone else
            if rng.random() < 0.5:
                kwargs["seed"] = 2**64 + rng.randint(0, 9)
            else:
                kwargs["messages"] = [{"role": "user", "content": "word " * 400_000}]
        start = time.monotonic()
        try:
            if stream:
                first = None
                finished = False
                hang_up = not bad and rng.random() < args.hangup_fraction
                response = await client.chat.completions.create(stream=True, **kwargs)
                async for chunk in response:
                    content = chunk.choices[0].delta.content if chunk.choices else None
                    if first is None and content:  # the first token's text (the role chunk comes before any)
                        first = time.monotonic() - start
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finished = True
                    if hang_up and first is not None:
                        break
                await response.close()
                if hang_up:
                    tally.abandoned += 1
                    continue
                if not finished:
                    tally.lost.append(f"stream for {model} ended without a finish_reason")
                    continue
                tally.ttft.append(first if first is not None else time.monotonic() - start)
            else:
                out = await client.chat.completions.create(**kwargs)
                if not out.choices or out.choices[0].message.content is None:
                    tally.lost.append(f"answer for {model} without content")
                    continue
                tally.tokens += out.usage.completion_tokens if out.usage else 0
            tally.latency.append(time.monotonic() - start)
            tally.status["200"] += 1
            if bad:
                tally.unexpected.append(f"invalid request answered 200 ({kwargs.get('seed')})")
        except openai.APIStatusError as exc:
            tally.status[str(exc.status_code)] += 1
            if exc.status_code == 429:
                await asyncio.sleep(float(exc.response.headers.get("retry-after", "1")) * rng.uniform(0.5, 1.5))
            elif exc.status_code == 400 and bad:
                pass
            elif exc.status_code < 500:
                tally.unexpected.append(f"{exc.status_code} {exc.message[:120]}")
        except (openai.APIConnectionError, openai.APITimeoutError, openai.APIResponseValidationError) as exc:
            tally.lost.append(f"{type(exc).__name__}: {exc}")
    await client.close()


async def run_clients(url: str, models: list[str], args: argparse.Namespace, tally: Tally) -> None:
    deadline = time.monotonic() + args.duration
    await asyncio.gather(*(client_loop(i, url, models, deadline, tally, args) for i in range(args.clients)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (a random 2-layer model, default) or smollm2 (the embedded model)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds the clients send requests")
    ap.add_argument("--max-tokens", type=int, default=32, help="each request asks 4..this many tokens")
    ap.add_argument("--queue-size", type=int, default=16, help="the server's --queue-size (below --clients: 429s happen)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--batch-wait-ms", type=float, default=20.0)
    ap.add_argument("--bad-fraction", type=float, default=0.05, help="share of requests invalid on purpose (400s)")
    ap.add_argument("--hangup-fraction", type=float, default=0.05, help="share of streams the client leaves after the first token")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="a request without an answer by then is lost")
    ap.add_argument("--train-steps", type=int, default=None, help="LoRA steps per adapter [tiny: 6, smollm2: 2]")
    args = ap.parse_args()
    from tailored.cli.common import quiet

    quiet()
    work = Path(tempfile.mkdtemp(prefix="soak-serve-"))
    started = time.monotonic()
    base, runs = train_adapters(work, args.model, args.train_steps or (6 if args.model == "tiny" else 2))
    print(f"trained two adapters in {time.monotonic() - started:.0f}s", flush=True)
    port = free_port()
    env = dict(os.environ, TAILORED_API_KEY=KEY, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "tailored.cli.main", "serve", "--base", base, "--runs", str(runs), "--port", str(port),
           "--no-jobs", "--queue-size", str(args.queue_size), "--max-batch", str(args.max_batch),
           "--batch-wait-ms", str(args.batch_wait_ms), "--max-tokens", str(args.max_tokens)]
    log = (work / "server.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        return soak(server, url, args, work)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def soak(server: subprocess.Popen, url: str, args: argparse.Namespace, work: Path) -> int:
    import httpx

    auth = {"authorization": f"Bearer {KEY}"}
    deadline = time.monotonic() + 120
    while True:
        try:
            listed = httpx.get(url + "/models", headers=auth, timeout=5).json()["data"]
            break
        except (httpx.HTTPError, KeyError):
            if server.poll() is not None or time.monotonic() > deadline:
                print((work / "server.log").read_text()[-3000:])
                raise SystemExit("the server did not start") from None
            time.sleep(0.3)
    models = [m["id"] for m in listed]
    assert len(models) == 3, models
    idle_rss, _ = rss_kib(server.pid)
    print(f"soak · {args.model} model · {args.clients} clients · {args.duration:g} s · models {', '.join(models)}")
    print(f"server: --queue-size {args.queue_size} --max-batch {args.max_batch} --batch-wait-ms {args.batch_wait_ms:g} "
          f"--max-tokens {args.max_tokens}; RSS before load {idle_rss / 1024:.0f} MiB", flush=True)
    tally = Tally()
    samples: list[tuple[float, int]] = []

    async def sample_rss() -> None:
        t0 = time.monotonic()
        while True:
            samples.append((time.monotonic() - t0, rss_kib(server.pid)[0]))
            await asyncio.sleep(1.0)

    async def everything() -> None:
        sampler = asyncio.create_task(sample_rss())
        try:
            await run_clients(url, models, args, tally)
        finally:
            sampler.cancel()

    t0 = time.monotonic()
    asyncio.run(everything())
    wall = time.monotonic() - t0
    time.sleep(1.0)  # let the rows of the last hung-up streams leave
    stats = httpx.get(url + "/stats", headers=auth, timeout=10).json()["engine"]
    _, peak = rss_kib(server.pid)
    completed = tally.status["200"]
    print(f"completed {completed} requests in {wall:.1f} s ({completed / wall:.1f}/s), "
          f"{tally.tokens} tokens in non-streamed answers; {tally.abandoned} streams left by their client on purpose")
    print("answers by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.status.items())))
    print(f"latency p50 {pct(tally.latency, 0.5):.2f} s · p99 {pct(tally.latency, 0.99):.2f} s · "
          f"time to first token (streams) p50 {pct(tally.ttft, 0.5):.2f} s · p99 {pct(tally.ttft, 0.99):.2f} s")
    quarters = [samples[min(len(samples) - 1, int(q * (len(samples) - 1)))] for q in (0.25, 0.5, 0.75, 1.0)] if samples else []
    print(f"server RSS: before {idle_rss / 1024:.0f} MiB · during " +
          " · ".join(f"{t:.0f}s {r / 1024:.0f} MiB" for t, r in quarters) + f" · peak (VmHWM) {peak / 1024:.0f} MiB")
    print("server counters: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    problems = []
    fives = {k: v for k, v in tally.status.items() if k.startswith("5")}
    if fives:
        problems.append(f"5xx answers: {fives}")
    if tally.lost:
        problems.append(f"{len(tally.lost)} lost requests, e.g. {tally.lost[:3]}")
    if tally.unexpected:
        problems.append(f"{len(tally.unexpected)} unexpected answers, e.g. {tally.unexpected[:3]}")
    if stats.get("active_rows") or stats.get("queued"):
        problems.append(f"the server still holds rows or requests: {stats}")
    if server.poll() is not None:
        problems.append(f"the server exited ({server.returncode})")
    print("OK" if not problems else "FAILED:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
