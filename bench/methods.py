"""Every fine-tuning method on the embedded model and BANKING77: size, memory, speed and accuracy, measured.

Each method trains in its own subprocess (so peak memory is that method's alone) on the same seeded
subset of ``../shared/data/banking77/train.jsonl`` for the same number of steps, then answers the
same validation queries by greedy generation; an answer is correct when it is exactly the label.
The untrained base answers the same queries as the reference. Ratios are against LoRA (the default).

    nice -n 10 .venv/bin/python bench/methods.py                  # all methods, writes docs/methods.md
    .venv/bin/python bench/methods.py --methods lora,ia3 --steps 10 --n-val 20   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "banking77"
DOC = REPO / "docs" / "methods.md"
BEGIN, END = "<!-- bench:methods -->", "<!-- /bench:methods -->"
SPEED_BEGIN, SPEED_END = "<!-- bench:speed -->", "<!-- /bench:speed -->"


def _subset(src: Path, n: int, seed: int, dest: Path, keep_system: bool) -> list[dict]:
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    rows = rows[:n]
    if not keep_system:  # the shared system prompt is half of every sequence; without it steps are ~2x cheaper
        rows = [{"messages": [m for m in r["messages"] if m["role"] != "system"]} for r in rows]
    dest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _accuracy(chat: object, val_rows: list[dict], batch: int = 16) -> float:
    from tailored.eval.generate import GenerationSettings

    correct = 0
    for i in range(0, len(val_rows), batch):
        part = val_rows[i : i + batch]
        prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in part]
        answers = chat.generate_batch(prompts, GenerationSettings(max_new_tokens=12))  # type: ignore[attr-defined]
        for r, a in zip(part, answers):
            correct += a.strip() == r["messages"][-1]["content"].strip()
    return correct / max(1, len(val_rows))


def one(method: str, args: argparse.Namespace) -> dict:
    """Train + score one method in this process; returns its row."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from tailored.cli.common import quiet

    quiet()
    import tailored

    work = Path(args.work)
    val_rows = [json.loads(line) for line in (work / "validation.jsonl").read_text().splitlines()]
    row: dict = {"method": method}
    if method == "base":
        chat = tailored.load("smollm2")
        row.update(trainable=0, adapter_bytes=0, tokens_per_s=None, train_s=0.0, final_loss=None)
    else:
        from tailored.config.schema import TrainConfig

        extra = {"red_flags": "off"} if "red_flags" in TrainConfig.model_fields else {}  # time training only
        t0 = time.time()
        result = tailored.train(data=str(work / "train.jsonl"), model="smollm2", method=method, max_steps=args.steps,
                                batch_size=args.batch_size, save_every=args.steps, output=str(work / f"run-{method}"),
                                threads=1, max_seq_length=256, seed=0, learning_rate_multiplier=args.lr_multiplier,
                                validation=str(work / "validation.jsonl"), eval_every=args.steps, **extra)
        row["train_s"] = round(time.time() - t0, 1)
        row["trainable"] = result.manifest.parameters.trainable
        row["tokens_per_s"] = result.metrics["tokens_per_s"]
        losses = [h["loss"] for h in result.loop.history if h.get("split") == "train"]
        row["first_loss"], row["final_loss"] = losses[0], losses[-1]
        row["val_loss_before"] = result.metrics.get("initial_validation_loss")
        row["val_loss"] = result.metrics.get("validation_loss")
        row["adapter_bytes"] = sum(f.stat().st_size for f in (result.run_dir / "adapter").glob("*.safetensors"))
        chat = tailored.load(result.run_dir)  # the method's own loading path (no merge)
    t1 = time.time()
    row["accuracy"] = _accuracy(chat, val_rows)
    row["eval_s"] = round(time.time() - t1, 1)
    row["peak_rss_mb"] = round(_peak_rss_mb())
    return row


def _fmt_int(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def _fmt_bytes(n: int) -> str:
    if not n:
        return "–"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def table(rows: list[dict], args: argparse.Namespace) -> str:
    ref = next((r for r in rows if r["method"] == "lora" and "error" not in r), None)
    lines = [
        (f"Table written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{args.command}` "
        f"(SmolLM2-135M-Instruct, fp32, 1 CPU thread on a shared 2-core machine; {args.n_train} training examples, "
        f"{'' if args.keep_system else 'system prompt removed, '}{args.steps} steps of batch {args.batch_size} for every method at its default "
        f"settings and its base learning rate × {args.lr_multiplier}; "
        f"accuracy = exact label by greedy generation on {args.n_val} validation queries). "
        "Ratios are against LoRA in the same run."),
        "",
        "| method | trainable params | adapter on disk | peak RSS | tokens/s (× LoRA) | train time | val loss before → after | val accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error'][:80]} | | | | | | |")
            continue
        tps = r.get("tokens_per_s")
        ratio = f" ({tps / ref['tokens_per_s']:.2f}×)" if tps and ref and ref.get("tokens_per_s") else ""
        before, after = r.get("val_loss_before"), r.get("val_loss")
        loss = f"{before:.2f} → {after:.2f}" if before is not None and after is not None else (f"{after:.2f}" if after else "–")
        lines.append(f"| {r['method']} | {_fmt_int(r['trainable'])} | {_fmt_bytes(r['adapter_bytes'])} | {r['peak_rss_mb']:,} MB | "
                     f"{'–' if not tps else f'{tps:,.0f}'}{ratio} | {r['train_s']:.0f} s | {loss} | {100 * r['accuracy']:.1f}% |")
    return "\n".join(lines) + "\n"


def write_doc(text: str, begin: str = BEGIN, end: str = END) -> None:
    block = f"{begin}\n{text}{end}\n"
    if DOC.is_file() and begin in DOC.read_text():
        old = DOC.read_text()
        DOC.write_text(old[: old.index(begin)] + block + old[old.index(end) + len(end) + 1 :])
    else:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text((DOC.read_text() + "\n" if DOC.is_file() else "# Fine-tuning methods\n\n") + block)


def speed(args: argparse.Namespace, work: Path) -> str:
    """Step speed of every method in ONE process, round-robin, on one fixed batch: a fair speed ratio.

    The subprocess runs above share the machine with whatever else runs at the time, so their
    tokens/s mostly measure the load. Here each round times every method in turn (one warm-up step,
    then ``--speed-steps`` timed optimizer steps), so load changes hit all methods alike; the median
    over rounds is reported.
    """
    import statistics

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from tailored.cli.common import quiet

    quiet()
    from tailored.data.batching import micro_batches
    from tailored.data.readers import read_records
    from tailored.data.tokenize import encode_all
    from tailored.methods import get_method
    from tailored.models.load import load_model, load_tokenizer, local_folder
    from tailored.train.forward import token_loss

    folder = local_folder("smollm2")
    tok = load_tokenizer(folder)
    rows, _ = encode_all(tok, read_records(work / "train.jsonl").examples[: args.batch_size], max_seq_length=256)
    batch = micro_batches(rows, pad_id=int(tok.pad_token_id), micro_batch_tokens=1 << 20)[0]
    names = [m for m in args.methods.split(",") if m != "base"]
    per_step: dict[str, list[float]] = {m: [] for m in names}
    for _ in range(args.speed_rounds):
        for name in names:
            method = get_method(name)
            options = method.Options()
            model = method.prepare(load_model(folder, **method.base_load_kwargs(options, "cpu")), options)
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
            for step in range(args.speed_steps + 1):
                t0 = time.perf_counter()
                token_loss(model, batch).loss_sum.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step:  # the first step warms up allocators and kernels
                    per_step[name].append(time.perf_counter() - t0)
            del model, optimizer
    tokens = batch.n_real_tokens
    ref = statistics.median(per_step["lora"]) if "lora" in per_step else None
    lines = [(f"Step speed measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
             f"`python bench/methods.py --speed` (one process, {args.speed_rounds} rounds × {args.speed_steps} timed steps "
             f"per method, round-robin; one batch of {len(rows)} examples, {tokens} tokens; forward + backward + AdamW; "
             "1 thread). Ratio = LoRA's step time / the method's (higher is faster)."), "",
             "| method | median s/step | tokens/s | × LoRA |", "|---|---:|---:|---:|"]
    for name in names:
        med = statistics.median(per_step[name])
        lines.append(f"| {name} | {med:.2f} | {tokens / med:,.0f} | {ref / med:.2f}× |" if ref else f"| {name} | {med:.2f} | {tokens / med:,.0f} | – |")
    return "\n".join(lines) + "\n"


ORDER = ["base", "lora", "full", "dora", "qlora", "ia3", "adapter", "prefix", "prompt"]


def _all_rows(results: Path) -> list[dict]:
    """Rows of every tag (parallel groups of one measurement), newest per method, in a fixed order."""
    rows: dict[str, dict] = {}
    found = [r for path in results.glob("methods-*.json") for r in json.loads(path.read_text())]
    for r in sorted(found, key=lambda r: r.get("finished", 0)):
        rows[r["method"]] = r
    return sorted(rows.values(), key=lambda r: ORDER.index(r["method"]) if r["method"] in ORDER else len(ORDER))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="base,lora,full,dora,qlora,ia3,adapter,prefix,prompt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--n-val", type=int, default=48)
    p.add_argument("--lr-multiplier", type=float, default=3.0, help="learning_rate_multiplier for every method")
    p.add_argument("--tag", default="all", help="results go to bench/results/methods-TAG.json; the doc table joins all tags")
    p.add_argument("--keep-system", action="store_true", help="keep the dataset's system prompt (2x longer sequences)")
    p.add_argument("--speed", action="store_true", help="only the fair step-speed comparison (one process, round-robin)")
    p.add_argument("--speed-rounds", type=int, default=3)
    p.add_argument("--speed-steps", type=int, default=2)
    p.add_argument("--doc-only", action="store_true", help="only rebuild docs/methods.md from bench/results")
    p.add_argument("--no-doc", action="store_true", help="print the table without writing docs/methods.md")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("ROW " + json.dumps(one(args.one, args)), flush=True)
        return 0
    if args.speed:
        work = Path(tempfile.mkdtemp(prefix="tailored-bench-speed-"))
        _subset(DATA / "train.jsonl", args.n_train, 0, work / "train.jsonl", args.keep_system)
        text = speed(args, work)
        shutil.rmtree(work, ignore_errors=True)
        print(text)
        if not args.no_doc:
            write_doc(text, begin=SPEED_BEGIN, end=SPEED_END)
        return 0
    if args.doc_only:  # rebuild the table from bench/results (e.g. after parallel groups)
        tags = sorted(p.stem.split("-", 1)[1] for p in (REPO / "bench" / "results").glob("methods-*.json"))
        args.command = f"python bench/methods.py --tag T --methods ...` (groups {', '.join(tags)}, same settings) then `--doc-only"
        write_doc(table(_all_rows(REPO / "bench" / "results"), args))
        return 0
    if not DATA.is_dir():
        print(f"{DATA} is not present; this benchmark needs ../shared/data/banking77", file=sys.stderr)
        return 2
    args.command = "python bench/methods.py " + " ".join(sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix=f"tailored-bench-methods-{args.tag}-"))
    _subset(DATA / "train.jsonl", args.n_train, 0, work / "train.jsonl", args.keep_system)
    _subset(DATA / "validation.jsonl", args.n_val, 1, work / "validation.jsonl", args.keep_system)
    rows: list[dict] = []
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--one", method, "--work", str(work), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--lr-multiplier", str(args.lr_multiplier)]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
        found = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        row = json.loads(found[-1]) if found else {"method": method, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        row["wall_s"] = round(time.time() - t0, 1)
        row["finished"] = time.time()
        rows.append(row)
        print(json.dumps(row), flush=True)
        (results / f"methods-{args.tag}.json").write_text(json.dumps(rows, indent=2) + "\n")
        if not args.no_doc:
            write_doc(table(_all_rows(results), args))
    print(table(rows, args))
    shutil.rmtree(work, ignore_errors=True)  # run folders (a full fine-tune is ~1 GB)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
