"""Quality per CPU-minute on the shared tasks: base zero-shot, the seed recipe, Tailored's defaults, a small sweep.

For each task of ``../shared/data`` (train on ``train.jsonl``, score on ``validation.jsonl``, which is
never trained on):

- banking77: classification accuracy (exact label), free; with decoding held to the 77 labels (xgrammar);
  and ranked (the most probable whole label, tailored.eval.ranking), each with its interval;
- text-to-sql: execution accuracy (the predicted query's rows equal the reference's, SQLite);
- dolly-open-qa: ROUGE-L F1.

Configurations, all on the embedded SmolLM2-135M-Instruct, same threads:

- ``base``: the base model zero-shot (banking77: with the 77 labels listed in the system prompt);
- ``seed-recipe``: HF ``Trainer`` defaults (lr 5e-5 linear, no warmup, batch 8, 3 epochs) + PEFT LoRA r=8
  on q_proj/v_proj, labels on every token (prompt included);
- ``defaults``: ``tailored.train(data=...)`` with no setting but the output folder;
- sweep (``--sweep``, or by name with ``--configs``): the defaults with a setting changed (the learning-rate
  multiplier, 3 to 6 epochs, LoRA r=8 on q/v only, rank 64 at alpha 128 or 32, batch size 8, LoRA dropout
  0.1 (the QLoRA paper's for 7-13B models), full fine-tuning; ``seed 7``, ``seed 11``: the defaults with
  another seed, the run-to-run noise; rank 64 at alpha 128 or 32 at those seeds too, for bench/seeds.py);
  ``neighbours 0`` (and its seeds 7 and 11): the defaults without the labelled neighbours a classification run
  lists in its prompts (``neighbours: auto`` is 4 there; the defaults before 2026-12-06); ``neighbours 8``: eight;
- ``embedding classifier`` (classification only): a reference without a language model, frozen all-MiniLM-L6-v2
  embeddings + logistic regression on the whole train file.

Every trained configuration gets at most ``--budget-minutes`` of training; a configuration whose own
length would exceed it is cut to the steps that fit (the table says so: ``cut``), sized by an 8-step pilot
of its own speed and of one validation pass (a run validates before training and five times in it).
Quality comes with a 95% bootstrap interval over the scored examples, and every
configuration scored in the same call as ``defaults`` with its paired difference from it (the same
examples: a far tighter interval than the two unpaired ones). ``--reuse`` scores the completed runs an
earlier call left in ``--work`` again instead of training them. Prints one table and writes JSON.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/quality.py --quick --json bench/results/quality-quick.json
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/quality.py --budget-minutes 20 --sweep  # the real measurement
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TASKS = {"banking77": "classification", "text-to-sql": "sql", "dolly-open-qa": "generation"}
METRIC = {"classification": "accuracy", "sql": "execution accuracy", "generation": "ROUGE-L"}
# The defaults are LoRA r=16 on all linear layers at the size-scaled learning-rate multiplier (7.21 for the
# embedded model since the sweep of 2026-12-02; 2.69 before); each sweep entry changes one or two settings.
# The learning rates are named by their multiplier ("lr 5.4" is the "lr x2" row of the 2026-12-02 05:32 run).
SWEEP = {"lr 1.35": {"learning_rate_multiplier": 1.35}, "lr 2.69": {"learning_rate_multiplier": 2.69},
         "lr 5.4": {"learning_rate_multiplier": 5.4}, "lr 10.8": {"learning_rate_multiplier": 10.8},
         "lr 14.4": {"learning_rate_multiplier": 14.4}, "epochs 3": {"epochs": 3},
         "epochs 4": {"epochs": 4}, "epochs 5": {"epochs": 5}, "epochs 6": {"epochs": 6},
         "lr 5.4 batch 8": {"learning_rate_multiplier": 5.4, "batch_size": 8},
         "r8 qv": {"lora_r": 8, "lora_alpha": 16, "target_modules": "q_proj,v_proj"},
         "r64": {"lora_r": 64, "lora_alpha": 128}, "r64 alpha32": {"lora_r": 64, "lora_alpha": 32},
         "batch 8": {"batch_size": 8}, "seed 7": {"seed": 7}, "seed 11": {"seed": 11},
         "r64 alpha32 seed 7": {"lora_r": 64, "lora_alpha": 32, "seed": 7},
         "r64 alpha32 seed 11": {"lora_r": 64, "lora_alpha": 32, "seed": 11},
         "r64 seed 7": {"lora_r": 64, "lora_alpha": 128, "seed": 7},
         "r64 seed 11": {"lora_r": 64, "lora_alpha": 128, "seed": 11},
         "dropout 0.1": {"lora_dropout": 0.1}, "full": {"method": "full"},
         "neighbours 0": {"neighbours": 0}, "neighbours 0 seed 7": {"neighbours": 0, "seed": 7},
         "neighbours 0 seed 11": {"neighbours": 0, "seed": 11}, "neighbours 8": {"neighbours": 8}}
BASE, RECIPE, EMBED = "base (zero-shot)", "seed recipe", "embedding classifier"
PILOT_STEPS = 8
CONFIGS = {"defaults": {}} | SWEEP
PROBES = {"general": None, "arc-easy": DATA / "forgetting-probe" / "validation.jsonl"}


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


def answer(model, test, max_new_tokens: int, batch_size: int = 8, labels: list[str] | None = None) -> tuple[list[str], float]:
    """Greedy answers to the test prompts (held to ``labels`` exactly when given)."""
    from tailored.engine.constraints import Structure
    from tailored.eval.generate import GenerationSettings

    t = time.time()
    out: list[str] = []
    settings = GenerationSettings(max_new_tokens=max_new_tokens, constraint=Structure.choice(labels) if labels else None)
    for i in range(0, len(test.prompts), batch_size):
        out += model.generate_batch(test.prompts[i:i + batch_size], settings)
    return out, time.time() - t


def rank(model, test, labels: list[str]) -> tuple[list[str], float, float]:
    """The most probable whole label after each test prompt (tailored.eval.ranking), the seconds it took and the
    mean number of labels scored per prompt."""
    t = time.time()
    answers, scored = model.rank_labels(test.prompts, labels)  # the run's prompts as trained (labelled neighbours)
    return answers, time.time() - t, scored


def seed_recipe(train: Path, tokenizer_folder: Path, budget_s: float, threads: int):
    """The seed recipe (bench/recipe.py) for its 3 epochs, stopped when ``budget_s`` of training has passed (its
    linear schedule planned for all of them)."""
    from transformers import Trainer, TrainerCallback

    from recipe import recipe_arguments, recipe_parts

    model, tok, encoded, collate, stats = recipe_parts(train, tokenizer_folder, threads)

    class Budget(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps = state.global_step
            if time.time() - t > budget_s:
                control.should_training_stop = True

    budget = Budget()
    t = time.time()
    Trainer(model=model, args=recipe_arguments(per_device_train_batch_size=8, num_train_epochs=3), train_dataset=encoded,
            data_collator=collate, callbacks=[budget]).train()
    model.eval()
    return model, tok, time.time() - t, stats["real"], budget.steps


def probe_scores(model) -> dict[str, list[float]]:
    """Per-item calibrated correctness on the shipped forgetting probe and the ARC-Easy slice (the red flag's score)."""
    from tailored.eval.choice import DEFAULT_PROBE, choice_logprobs, read_choice_file, score_choices

    out = {}
    for name, path in PROBES.items():
        if path is not None and not Path(path).is_file():
            continue
        items = read_choice_file(path or DEFAULT_PROBE)
        scored = score_choices(items, choice_logprobs(model.model, model.tokenizer, items),
                               choice_logprobs(model.model, model.tokenizer, items, null=True))
        out[name] = scored["correct_calibrated"]
    return out


def save(path: str, args, rows: list[dict], seconds: float, complete: bool = False) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"args": vars(args), "minutes": seconds / 60, "complete": complete, "rows": rows,
                                      "measured": time.strftime("%Y-%m-%d %H:%M %Z")}, indent=1))


def run_task(task: str, args, work: Path, done: list[dict], started: float) -> list[dict]:
    from tailored.config.manifest import RunFolder
    from tailored.eval.generate import ChatModel, load
    from tailored.eval.metrics import paired_difference
    from tailored.eval.tasks import read_test_set
    from tailored.models.load import load_tokenizer, local_folder
    from tailored.train.hparams import resolve
    from tailored.train.run import train
    from tailored.train.validation import auto_holdout_count

    kind, folder = TASKS[task], local_folder("smollm2")
    src = DATA / task
    train_file = write_rows(work / f"{task}-train.jsonl", read_rows(src / "train.jsonl", args.train_limit))
    test = read_test_set(src / "validation.jsonl", args.eval_limit)
    labels = json.loads((src / "labels.json").read_text()) if (src / "labels.json").is_file() else None
    tok = load_tokenizer(folder)
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in test.references)
    max_new = min(args.max_new_tokens, int(1.5 * longest) + 8)  # tokens, not words: a banking77 label is up to 17
    paces: dict[str, Pace] = {}  # per speed key: measured by its pilot on this task
    n_train = len(read_rows(train_file))
    budget_s = args.budget_minutes * 60
    rows: list[dict] = []
    wanted = args.configs

    def record(config: str, model, train_s: float, tokens: int, note: str = "", curve: list | None = None,
               prompts=None, answers: list[str] | None = None) -> None:
        prompts = prompts or (base_test if config == BASE else test)
        answers, gen_s = (answers, 0.0) if answers is not None else answer(model, prompts, max_new)
        scores = per_item(kind, test, answers, labels)
        mean, lo, hi = interval(scores)
        row = {"task": task, "metric": METRIC[kind], "config": config, "quality": mean, "ci95": [lo, hi],
               "train_minutes": train_s / 60, "tokens_per_s": tokens / train_s if train_s else None,
               "answer_seconds": gen_s, "n_scored": len(answers), "note": note, "examples": answers[:3],
               "scores": scores}
        # paired on the same examples: far tighter than comparing the two intervals (which are unpaired)
        ref = next((r for r in [*done, *rows] if r["task"] == task and r["config"] == "defaults" and "scores" in r), None)
        if ref is not None and config not in (BASE, "defaults") and len(ref["scores"]) == len(scores):
            row["vs_defaults"] = paired_difference(ref["scores"], scores)
        if curve:  # [step, validation loss, elapsed seconds]: what bench/patience.py replays
            row["validation"] = curve
        if labels and model is not None:  # classification served as classification: decoding held to the label set, and the label set ranked
            held, held_s = answer(model, prompts, max_new, labels=labels)
            ranked, ranked_s, row["labels_scored_ranked"] = rank(model, prompts, labels)
            for kind_of, got, secs in (("constrained", held, held_s), ("ranked", ranked, ranked_s)):
                by_item = per_item(kind, test, got, labels)
                k_mean, k_lo, k_hi = interval(by_item)
                row |= {f"quality_{kind_of}": k_mean, f"ci95_{kind_of}": [k_lo, k_hi], f"answer_seconds_{kind_of}": secs,
                        f"scores_{kind_of}": by_item}
                if ref is not None and f"scores_{kind_of}" in ref and config not in (BASE, "defaults"):
                    row[f"vs_defaults_{kind_of}"] = paired_difference(ref[f"scores_{kind_of}"], by_item)
        if args.probes and model is not None:
            scores = probe_scores(model)
            if config == BASE:
                probe_base.update(scores)
            row["probes"] = {name: {"accuracy": sum(v) / len(v),
                                    **({"delta": d["delta"], "se": d["se"]} if config != BASE and name in probe_base
                                       and (d := paired_difference(probe_base[name], v)) else {})}
                             for name, v in scores.items()}
        rows.append(row)
        print(line(row), flush=True)
        if args.json:  # after every row, so a run cut short by its time limit still leaves what it measured
            save(args.json, args, [*done, *rows], time.time() - started)

    # base zero-shot
    probe_base: dict[str, list[float]] = {}
    base_test = test
    if labels:  # its only chance: the label list in the prompt
        listed = " Reply with exactly one of these labels and nothing else: " + ", ".join(labels) + "."
        base_test = type(test)(test.path, test.sha256, test.examples,
                               [[dict(m, content=m["content"] + listed) if m["role"] == "system" else m for m in p]
                                for p in test.prompts], test.references)
    if BASE in wanted:
        record(BASE, load("smollm2"), 0.0, 0, "label list in the prompt" if labels else "")

    if EMBED in wanted and labels:  # a reference: what the labels give away to a frozen 22M sentence encoder
        from embedding_classifier import embedding_classifier

        t = time.time()
        got = embedding_classifier(read_rows(train_file), test.prompts)
        record(EMBED, None, time.time() - t, 0, "all-MiniLM-L6-v2 + logistic regression, trained on the whole train file",
               answers=got)

    if RECIPE in wanted:
        recipe_steps = 3 * -(-n_train // 8)
        model, recipe_tok, secs, real, steps = seed_recipe(train_file, folder, budget_s, args.threads)
        record(RECIPE, ChatModel(model, recipe_tok, name="recipe"), secs, real,
               f"stopped by the budget after {steps} of {recipe_steps} steps" if steps < recipe_steps else f"{steps} steps")
        del model

    for name, change in CONFIGS.items():
        if name not in wanted:
            continue
        # the budget needs this configuration's speed on this machine now (a rank-64 adapter trains ~20% slower
        # than rank 16): an 8-step pilot measures it once per method/rank/targets/batch
        key, out = speed_key(change), work / f"{task}-{name.replace(' ', '_')}"
        finished = RunFolder(out).read() if args.reuse and RunFolder(out).exists() else None
        reused = finished is not None and finished.status == "completed"  # --reuse: scored again, not trained again
        if key not in paces and not reused:
            pilot = work / f"{task}-pilot"
            shutil.rmtree(pilot, ignore_errors=True)
            train(data=str(train_file), output=str(pilot), threads=args.threads, red_flags="off", max_steps=PILOT_STEPS,
                  eval_every=PILOT_STEPS, **change)  # validates at steps 0 and 8, as a run does
            paces[key] = pilot_pace(pilot)
        trained_on = n_train - auto_holdout_count(n_train)  # what validation: auto leaves for training

        def schedule(max_steps: int | None = None, change=change):
            return resolve(n_examples=trained_on, epochs=change.get("epochs", "auto"),
                           batch_size=change.get("batch_size", "auto"), learning_rate_multiplier="auto",
                           base_learning_rate=1.0, max_steps=max_steps, warmup_ratio=0.0, eval_every=None,
                           save_every=None, guarded=True)

        hp = schedule()
        if reused:
            metrics, note = finished.metrics.model_dump(), f"reused from {out}"
            if metrics["steps"] < hp.total_steps:  # cut by the budget when it was trained, or stopped early
                why = "stopped early" if finished.stopped_early else "cut by the budget"
                note += f", {why} at {metrics['steps']} of {hp.total_steps} steps"
        else:
            steps = fit_steps(budget_s, paces[key], hp.total_steps, schedule)
            note = f"cut to {steps} of {hp.total_steps} steps by the budget" if steps < hp.total_steps else ""
            shutil.rmtree(out, ignore_errors=True)
            metrics = train(data=str(train_file), output=str(out), threads=args.threads, red_flags="off",
                            **({"max_steps": steps} if note else {}), **change).metrics
        which = "best" if (out / "best").is_dir() else "final"
        record(name, load(out), metrics["seconds"], metrics["real_tokens"],
               "; ".join(filter(None, [note, f"{metrics['steps']} steps, weights {which}"])), curve=validation_curve(out))
    return rows


def speed_key(change: dict) -> str:
    """What sets a configuration's tokens/s: everything it changes but the epochs, the learning rate and the seed."""
    return json.dumps({k: v for k, v in change.items() if k not in ("epochs", "learning_rate_multiplier", "seed")},
                      sort_keys=True)


def validation_curve(run_dir: Path) -> list[list[float]]:
    """[step, validation loss, training seconds so far] of each validation after step 0 (one per step)."""
    from tailored.eval.redflags import read_curves

    train, val = read_curves(run_dir)
    curve = {}
    for v in val:
        if v["step"] > 0:  # step 0 is the base model's, never kept
            elapsed = max((t.get("elapsed_s", 0.0) for t in train if t["step"] <= v["step"]), default=0.0)
            curve[v["step"]] = [v["step"], v["loss"], elapsed]
    return list(curve.values())


@dataclass(frozen=True)
class Pace:
    """What a configuration's training costs on this machine now, from its pilot."""

    tokens_per_s: float  # training steps only
    tokens_per_example: float  # as the run trains it: its prompts as rendered, labelled neighbours included
    validation_s: float  # one validation pass (and the best weights it saves)


def pilot_pace(run: Path) -> Pace:
    """A pilot's pace: tokens/s of its steps after the first two, which are slower (allocator and caches warming
    up), and its last validation pass (the run's seconds after its last step's log).

    Six steps, not two: one step's speed varies by a third with its batch's padding (226 to 315 tokens/s on
    one rank-64 pilot), and a pilot that guessed 17% low cut a run to 15 of its 20 minutes. The validation
    passes are counted, not guessed: seven of about 33 s each took nearly 4 of a banking77 run's 22.7 minutes
    when the budget took them for a flat 8% of its speed."""
    from tailored.config.manifest import RunFolder

    manifest = RunFolder(run).read()
    steps = [r for r in read_rows(run / "metrics.jsonl") if r.get("split") == "train"]
    speed = sum(r["real_tokens"] for r in steps[2:]) / (steps[-1]["elapsed_s"] - steps[1]["elapsed_s"])
    per_example = sum(r["real_tokens"] for r in steps) / (len(steps) * manifest.config["batch_size"])
    return Pace(speed, per_example, max(0.0, manifest.metrics.seconds - steps[-1]["elapsed_s"]))


def fit_steps(budget_s: float, pace: Pace, steps_wanted: int, schedule) -> int:
    """The most steps (at most ``steps_wanted``, at least 2) whose training and validation passes fit ``budget_s``.

    ``schedule(max_steps)`` is the run's resolved schedule at that length (its batch size, where it validates)."""
    def seconds(steps: int) -> float:
        hp = schedule(steps)
        passes = 1 + sum(hp.validates_at(s) for s in range(1, steps + 1))  # step 0: the "before" of the run
        return steps * hp.batch_size * pace.tokens_per_example / pace.tokens_per_s + passes * pace.validation_s

    steps = steps_wanted
    while steps > 2 and seconds(steps) > budget_s:
        steps -= 1
    return steps


def line(row: dict) -> str:
    lo, hi = row["ci95"]
    tps = f"{row['tokens_per_s']:8.1f}" if row["tokens_per_s"] else "       -"
    extra = []
    if "quality_constrained" in row:
        c_lo, c_hi = row["ci95_constrained"]
        extra.append(f"held to labels {row['quality_constrained']:.3f} [{c_lo:.3f}, {c_hi:.3f}]")
    if "quality_ranked" in row:
        r_lo, r_hi = row["ci95_ranked"]
        extra.append(f"ranked {row['quality_ranked']:.3f} [{r_lo:.3f}, {r_hi:.3f}]"
                     + (f" ({row['labels_scored_ranked']:.1f} labels scored a query)" if "labels_scored_ranked" in row else ""))
    if (d := row.get("vs_defaults")):
        extra.append(f"vs defaults {d['delta']:+.3f} paired [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    if (d := row.get("vs_defaults_ranked")):
        extra.append(f"ranked vs defaults {d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    for name, p in row.get("probes", {}).items():
        extra.append(f"probe {name} {p['accuracy']:.3f}" + (f" ({p['delta']:+.3f} ± {2 * p['se']:.3f})" if "delta" in p else ""))
    return (f"{row['task']:14s} {row['config']:18s} {row['metric']:19s} {row['quality']:6.3f} [{lo:.3f}, {hi:.3f}] "
            f"{row['train_minutes']:7.1f} {tps}  n={row['n_scored']}  " + "; ".join(filter(None, [row["note"], *extra])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    ap.add_argument("--budget-minutes", type=float, default=20.0, help="most training minutes per trained configuration")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 2.5 training minutes per configuration, 30 scored examples, 300 training examples "
                         "for text-to-sql and dolly, the seed recipe only on banking77, no sweep")
    ap.add_argument("--sweep", action="store_true", help="also train the sweep around the defaults: " + ", ".join(SWEEP))
    ap.add_argument("--no-recipe", action="store_true")
    ap.add_argument("--configs", default=None,
                    help=f"comma-separated configurations to run, of: {BASE}, {RECIPE}, {EMBED}, {', '.join(CONFIGS)} "
                         "(default: base, seed recipe, defaults, and the sweep with --sweep)")
    ap.add_argument("--no-probes", dest="probes", action="store_false",
                    help="skip the forgetting probes (shipped + ARC-Easy, calibrated) on each model")
    ap.add_argument("--eval-limit", type=int, default=None, help="score the first N validation examples")
    ap.add_argument("--train-limit", type=int, default=None, help="train on the first N training examples")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None, help="write every row here")
    ap.add_argument("--reuse", action="store_true",
                    help="a configuration whose completed run an earlier call left in --work is scored again, not "
                         "trained again (its minutes and tokens/s are the run's own, its settings those it was trained "
                         "with, not re-checked against today's code): to add configurations to a comparison, paired "
                         "on the same examples")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} is missing (the shared datasets are not in a fresh clone)", file=sys.stderr)
        return 2
    if args.configs:
        args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in args.configs if c not in (BASE, RECIPE, EMBED, *CONFIGS)]
        if unknown:
            ap.error(f"unknown configuration(s) {unknown}; known: {[BASE, RECIPE, EMBED, *CONFIGS]}")
    else:
        args.configs = [BASE, *([] if args.no_recipe else [RECIPE]), "defaults", *(SWEEP if args.sweep else [])]
    if args.reuse and not args.work:
        ap.error("--reuse scores the runs in --work again: give the --work folder of the call that trained them")
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
    t0 = time.time()
    for task in args.tasks.split(","):
        sub = argparse.Namespace(**vars(args))
        if args.quick and task != "banking77":
            sub.configs, sub.train_limit = [c for c in args.configs if c != RECIPE], args.train_limit or 300
        rows += run_task(task, sub, work, rows, t0)
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
