"""Quality per CPU-minute on the shared tasks: base zero-shot, the seed recipe, Tailored's defaults, a small sweep.

For each task of ``../shared/data`` (train on ``train.jsonl``, score on ``validation.jsonl``, which is
never trained on):

- banking77: classification accuracy (exact label);
- text-to-sql: execution accuracy (the predicted query's rows equal the reference's, SQLite);
- dolly-open-qa: ROUGE-L F1.

Configurations, all on the embedded SmolLM2-135M-Instruct, same threads:

- ``base``: the base model zero-shot (banking77: with the 77 labels listed in the system prompt);
- ``seed-recipe``: HF ``Trainer`` defaults (lr 5e-5 linear, no warmup, batch 8, 3 epochs) + PEFT LoRA r=8
  on q_proj/v_proj, labels on every token (prompt included);
- ``defaults``: ``tailored.train(data=...)`` with no setting but the output folder;
- sweep (``--sweep``): the defaults with one setting changed (learning rate ×0.5/×2, rank 16 on all linear
  layers, batch size 8).

Every trained configuration gets at most ``--budget-minutes`` of training; a configuration whose own
length would exceed it is cut to the steps that fit (the table says so: ``cut``). Quality comes with a
95% bootstrap interval over the scored examples. Prints one table and writes JSON.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/quality.py --quick --json bench/results/quality-quick.json
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/quality.py --budget-minutes 20 --sweep  # the real measurement
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TASKS = {"banking77": "classification", "text-to-sql": "sql", "dolly-open-qa": "generation"}
METRIC = {"classification": "accuracy", "sql": "execution accuracy", "generation": "ROUGE-L"}
SWEEP = {"lr x0.5": {"learning_rate_multiplier": 0.5}, "lr x2": {"learning_rate_multiplier": 2.0},
         "r16 all-linear": {"lora_r": 16, "lora_alpha": 32, "target_modules": "all-linear"}, "batch 8": {"batch_size": 8}}


def read_rows(path: Path, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def per_item(kind: str, test, answers: list[str], labels: list[str] | None) -> list[float]:
    """One score per scored example (what the interval is bootstrapped over)."""
    from tailored.eval.metrics import match_label
    from tailored.eval.sql import extract_schema, score_sql_one

    if kind == "classification":
        label_set = sorted(set(labels or []) | {r.strip() for r in test.references})
        return [float(match_label(a, label_set) == r.strip()) for a, r in zip(answers, test.references)]
    if kind == "sql":
        return [float(score_sql_one(extract_schema(u) or "", a, r)["execution_match"])
                for u, a, r in zip(test.user_texts(), answers, test.references)]
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(r, a)["rougeL"].fmeasure for r, a in zip(test.references, answers)]


def interval(scores: list[float], n_boot: int = 2000) -> tuple[float, float, float]:
    rng = random.Random(0)
    n = len(scores)
    mean = sum(scores) / max(n, 1)
    boots = sorted(sum(scores[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot)) if n else [0.0]
    return mean, boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]


def answer(model, test, max_new_tokens: int, batch_size: int = 8) -> tuple[list[str], float]:
    from tailored.eval.generate import GenerationSettings

    t = time.time()
    out: list[str] = []
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    for i in range(0, len(test.prompts), batch_size):
        out += model.generate_batch(test.prompts[i:i + batch_size], settings)
    return out, time.time() - t


def seed_recipe(train: Path, tokenizer_folder: Path, max_steps: int, threads: int):
    """HF Trainer defaults + LoRA r=8 q/v, labels = input_ids (pads masked): the recipe the seed article used."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from tailored.models.load import load_model, load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer(tokenizer_folder)
    model = get_peft_model(load_model(tokenizer_folder), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                                    target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    encoded = [tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"][:1024]
               for r in read_rows(train)]
    real = [0]

    def collate(batch: list[list[int]]) -> dict:
        width = max(len(b) for b in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b)] = torch.tensor(b)
            mask[i, : len(b)] = 1
        labels = ids.clone()
        labels[mask == 0] = -100
        real[0] += int(mask.sum())
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, num_train_epochs=3,
                             max_steps=max_steps, logging_steps=10**6, save_strategy="no", report_to=[], use_cpu=True,
                             dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    t = time.time()
    Trainer(model=model, args=args, train_dataset=encoded, data_collator=collate).train()
    model.eval()
    return model, tok, time.time() - t, real[0]


def tokens_per_example(train: Path, folder: Path) -> float:
    from tailored.models.load import load_tokenizer

    tok = load_tokenizer(folder)
    rows = read_rows(train, 200)
    return statistics.mean(len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"]) for r in rows)


def save(path: str, args, rows: list[dict], seconds: float, complete: bool = False) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"args": vars(args), "minutes": seconds / 60, "complete": complete, "rows": rows,
                                      "measured": time.strftime("%Y-%m-%d %H:%M %Z")}, indent=1))


def run_task(task: str, args, work: Path, speed: dict, done: list[dict], started: float) -> list[dict]:
    from tailored.eval.generate import ChatModel, load
    from tailored.eval.tasks import read_test_set
    from tailored.models.load import local_folder
    from tailored.train.hparams import resolve
    from tailored.train.run import train

    kind, folder = TASKS[task], local_folder("smollm2")
    src = DATA / task
    train_file = write_rows(work / f"{task}-train.jsonl", read_rows(src / "train.jsonl", args.train_limit))
    test = read_test_set(src / "validation.jsonl", args.eval_limit)
    labels = json.loads((src / "labels.json").read_text()) if (src / "labels.json").is_file() else None
    longest = max(len(r.split()) for r in test.references)
    max_new = min(args.max_new_tokens, int(1.5 * longest * 1.6) + 8)
    per_ex = tokens_per_example(train_file, folder)
    n_train = len(read_rows(train_file))
    budget_s = args.budget_minutes * 60
    rows: list[dict] = []

    def record(config: str, answers: list[str], train_s: float, tokens: int, gen_s: float, note: str = "") -> None:
        mean, lo, hi = interval(per_item(kind, test, answers, labels))
        row = {"task": task, "metric": METRIC[kind], "config": config, "quality": mean, "ci95": [lo, hi],
               "train_minutes": train_s / 60, "tokens_per_s": tokens / train_s if train_s else None,
               "answer_seconds": gen_s, "n_scored": len(answers), "note": note, "examples": answers[:3]}
        rows.append(row)
        print(line(row), flush=True)
        if args.json:  # after every row, so a run cut short by its time limit still leaves what it measured
            save(args.json, args, [*done, *rows], time.time() - started)

    # base zero-shot
    base = load("smollm2")
    base_test = test
    if labels:  # its only chance: the label list in the prompt
        listed = " Reply with exactly one of these labels and nothing else: " + ", ".join(labels) + "."
        base_test = type(test)(test.path, test.sha256, test.examples,
                               [[dict(m, content=m["content"] + listed) if m["role"] == "system" else m for m in p]
                                for p in test.prompts], test.references)
    answers, gen_s = answer(base, base_test, max_new)
    record("base (zero-shot)", answers, 0.0, 0, gen_s, "label list in the prompt" if labels else "")
    del base

    def fit(steps_wanted: int, batch: int) -> tuple[int, str]:
        tps = speed.get("tailored", 60.0)
        fits = max(2, int(budget_s * tps / (per_ex * batch)))
        return (steps_wanted, "") if steps_wanted <= fits else (fits, f"cut to {fits} of {steps_wanted} steps by the budget")

    if not args.no_recipe:
        wanted = 3 * -(-n_train // 8)
        tps = speed.get("recipe", 25.0)
        fits = max(2, int(budget_s * tps / (per_ex * 8)))
        steps = min(wanted, fits)
        model, tok, secs, real = seed_recipe(train_file, folder, steps, args.threads)
        speed["recipe"] = real / secs
        answers, gen_s = answer(ChatModel(model, tok, name="recipe"), test, max_new)
        record("seed recipe", answers, secs, real, gen_s, f"cut to {steps} of {wanted} steps by the budget" if steps < wanted else "")
        del model

    configs = {"defaults": {}} | (SWEEP if args.sweep else {})
    for name, change in configs.items():
        hp = resolve(n_examples=n_train, epochs="auto", batch_size=change.get("batch_size", "auto"),
                     learning_rate_multiplier="auto", base_learning_rate=1.0, max_steps=None, warmup_ratio=0.0,
                     eval_every=None, save_every=None)
        steps, note = fit(hp.total_steps, hp.batch_size)
        out = work / f"{task}-{name.replace(' ', '_')}"
        result = train(data=str(train_file), output=str(out), threads=args.threads, red_flags="off",
                       **({"max_steps": steps} if note else {}), **change)
        speed["tailored"] = result.metrics["tokens_per_s"]
        which = "best" if (out / "best").is_dir() else "final"
        answers, gen_s = answer(load(out), test, max_new)
        record(name, answers, result.metrics["seconds"], result.metrics["real_tokens"], gen_s,
               "; ".join(filter(None, [note, f"{result.metrics['steps']} steps, weights {which}"])))
    return rows


def line(row: dict) -> str:
    lo, hi = row["ci95"]
    tps = f"{row['tokens_per_s']:8.1f}" if row["tokens_per_s"] else "       -"
    return (f"{row['task']:14s} {row['config']:18s} {row['metric']:19s} {row['quality']:6.3f} [{lo:.3f}, {hi:.3f}] "
            f"{row['train_minutes']:7.1f} {tps}  n={row['n_scored']}  {row['note']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    ap.add_argument("--budget-minutes", type=float, default=20.0, help="most training minutes per trained configuration")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 2.5 training minutes per configuration, 30 scored examples, 300 training examples "
                         "for text-to-sql and dolly, the seed recipe only on banking77, no sweep")
    ap.add_argument("--sweep", action="store_true", help="also train the sweep around the defaults")
    ap.add_argument("--no-recipe", action="store_true")
    ap.add_argument("--eval-limit", type=int, default=None, help="score the first N validation examples")
    ap.add_argument("--train-limit", type=int, default=None, help="train on the first N training examples")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None, help="write every row here")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} is missing (the shared datasets are not in a fresh clone)", file=sys.stderr)
        return 2
    if args.quick:
        args.budget_minutes = min(args.budget_minutes, 2.5)
        args.eval_limit = args.eval_limit or 30
        args.max_new_tokens = min(args.max_new_tokens, 64)

    import torch

    torch.set_num_threads(args.threads)
    from tailored.cli.common import quiet

    quiet()
    work = Path(args.work or tempfile.mkdtemp(prefix="tailored-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'task':14s} {'config':18s} {'metric':19s} {'value':>6s} {'95% CI':16s} {'train min':>7s} {'tok/s':>8s}", flush=True)
    rows: list[dict] = []
    speed: dict = {}
    t0 = time.time()
    for task in args.tasks.split(","):
        sub = argparse.Namespace(**vars(args))
        if args.quick and task != "banking77":
            sub.no_recipe, sub.train_limit = True, args.train_limit or 300
        rows += run_task(task, sub, work, speed, rows, t0)
    total = (time.time() - t0) / 60
    print(f"\n{total:.1f} min in all; budget {args.budget_minutes:g} training min per configuration; "
          f"{'quick' if args.quick else 'full'} run")
    for task in {r["task"] for r in rows}:
        by = {r["config"]: r for r in rows if r["task"] == task}
        if "base (zero-shot)" in by and "defaults" in by:
            b, d = by["base (zero-shot)"]["quality"], by["defaults"]["quality"]
            print(f"{task}: defaults {d:.3f} vs base {b:.3f} (difference {d - b:+.3f})")
    if args.json:
        save(args.json, args, rows, time.time() - t0, complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
