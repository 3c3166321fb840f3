"""Every CUDA path of Tailored in one short run, one line per path with its figure; exit 1 when any fails.

Paths: bf16 LoRA and full fine-tuning steps, QLoRA (bitsandbytes 4-bit on CUDA), FSDP over the
visible GPUs (its losses against the one-process LoRA run), ZeRO-3 when DeepSpeed is installed, the
built-in serving engine on CUDA and ``--engine vllm`` with two adapters, both through the official
openai SDK. Each uses the embedded SmolLM2-135M and the shipped triage examples, a few steps each.

Without CUDA it prints that nothing was checked and exits 0 (``tests/test_gpu_check.py`` holds it to
that); a path whose optional package is missing (vllm, deepspeed) says SKIP, never ok.

    bash bench/gpu_check.sh            # or: python bench/gpu_check.py [--steps 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

RESULTS: list[tuple[str, str, str]] = []  # (path, verdict, figure)


def line(path: str, verdict: str, figure: str) -> None:
    RESULTS.append((path, verdict, figure))
    print(f"{verdict:4}  {path:28} {figure}", flush=True)


def check(path: str, fn: Callable[[], str]) -> Any:
    try:
        line(path, "ok", fn())
    except Skip as why:
        line(path, "SKIP", str(why))
    except Exception as exc:  # noqa: BLE001 - every path is reported, the others still run
        line(path, "FAIL", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")


class Skip(Exception):
    pass


def _data() -> str:
    return str(resources.files("tailored") / "examples" / "triage_train.jsonl")


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


def _train(out: Path, steps: int, **settings: Any) -> str:
    import torch

    import tailored

    torch.cuda.reset_peak_memory_stats()
    result = tailored.train(data=_data(), model="smollm2", output=str(out), max_steps=steps, batch_size=8,
                            device="cuda", precision="bf16", red_flags="off", **settings)
    m = result.metrics
    if not all(map(lambda x: x == x and abs(x) < 1e4, _losses(out))):
        raise AssertionError(f"losses not finite: {_losses(out)}")
    if result.manifest.environment.device.split(":")[0] != "cuda":
        raise AssertionError(f"trained on {result.manifest.environment.device}, not CUDA")
    return (f"{m['tokens_per_s']:,.0f} tok/s · peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB · "
            f"loss {_losses(out)[0]:.3f} → {_losses(out)[-1]:.3f}")


def _launched(out: Path, steps: int, strategy: str, nproc: int) -> list[float]:
    cmd = [sys.executable, "-m", "tailored.cli.main", "train", "--data", _data(), "--model", "smollm2", "--output", str(out),
           "--max-steps", str(steps), "--batch-size", "8", "--precision", "bf16", "--red-flags", "off",
           "--strategy", strategy, "--nproc", str(nproc)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError((done.stderr or done.stdout).strip().splitlines()[-1])
    return _losses(out)


def _sharded(out: Path, steps: int, strategy: str, reference: Path) -> str:
    import torch

    n = torch.cuda.device_count()
    t0 = time.time()
    losses = _launched(out, steps, strategy, n)
    ref = _losses(reference)
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses, ref))
    if worst > 0.02:  # bf16 matmuls reduced in another order: about 1% per step at most
        raise AssertionError(f"losses {losses} differ from one GPU's {ref} by {worst:.1%}")
    return f"{n} GPU(s) · {time.time() - t0:.0f} s wall · losses within {worst:.2%} of one GPU's"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(runs: list[Path], engine: str) -> str:
    from openai import OpenAI

    port = _free_port()
    env = dict(os.environ, TAILORED_HOME=tempfile.mkdtemp(prefix="gpu-check-home-"))
    proc = subprocess.Popen([sys.executable, "-m", "tailored.cli.main", "serve", "--runs", *map(str, runs), "--port", str(port),
                             "--host", "127.0.0.1", "--engine", engine, "--device", "cuda", "--no-jobs"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local", max_retries=0, timeout=120)
        deadline = time.time() + 300
        while True:
            try:
                models = [m.id for m in client.models.list().data]
                break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"the server did not start: {(proc.stdout.read() if proc.stdout else '')[-300:]}")
                time.sleep(2)
        tuned = [m for m in models if any(r.name in m for r in runs)]
        if len(tuned) < len(runs):
            raise AssertionError(f"served models {models} lack the runs {[r.name for r in runs]}")
        t0, tokens = time.time(), 0
        for model in tuned:
            reply = client.chat.completions.create(model=model, max_tokens=32, temperature=0,
                                                   messages=[{"role": "user", "content": "My card was charged twice."}])
            if not reply.choices[0].message.content:
                raise AssertionError(f"{model} answered nothing")
            tokens += reply.usage.completion_tokens
        return f"{len(tuned)} adapter(s) · {tokens / (time.time() - t0):,.1f} completion tok/s (one request at a time)"
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default=None, help="Folder for the runs [default: a temporary one].")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu check: SKIPPED, nothing was checked: no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a machine with an NVIDIA GPU")
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-"))
    print(f"gpu check on {torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}, torch {torch.__version__}, runs in {out}")
    check("bf16 LoRA", lambda: _train(out / "lora", args.steps))
    check("bf16 full fine-tune", lambda: _train(out / "full", args.steps, method="full"))
    check("QLoRA (bitsandbytes nf4)", lambda: _train(out / "qlora", args.steps, method="qlora"))
    check("FSDP LoRA", lambda: _sharded(out / "fsdp", args.steps, "fsdp", out / "lora"))

    def zero3() -> str:
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise Skip("deepspeed not installed (pip install 'tailored[deepspeed]')") from None
        return _sharded(out / "zero3", args.steps, "zero3", out / "lora")

    check("ZeRO-3 LoRA", zero3)
    check("serve builtin (CUDA)", lambda: _serve([out / "lora"], "builtin"))

    def vllm() -> str:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise Skip("vllm not installed") from None
        second = out / "lora2"
        _train(second, args.steps, seed=7)
        return _serve([out / "lora", second], "vllm")

    check("serve --engine vllm, 2 LoRAs", vllm)
    failed = [p for p, v, _ in RESULTS if v == "FAIL"]
    print(f"gpu check: {len(RESULTS) - len(failed)} of {len(RESULTS)} paths ok or skipped"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
