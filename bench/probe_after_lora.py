"""Does the forgetting probe measure forgetting? Raw and calibrated probe accuracy, base vs a banking77 LoRA.

Trains the defaults for 30 steps on ../shared/data/banking77/train.jsonl, then scores the shipped probe and the
ARC-Easy slice on the base and the tuned model, raw and calibrated, with the paired difference and its s.e.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/probe_after_lora.py   # ~15 min on a busy 2-core machine
"""

import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
from tailored.cli.common import quiet
quiet()
import torch; torch.set_num_threads(1)
from tailored.eval.choice import DEFAULT_PROBE, read_choice_file, choice_logprobs, score_choices
from tailored.eval.generate import load
from tailored.eval.metrics import paired_difference
from tailored.train.run import train
t = time.time()
out = tempfile.mkdtemp() + "/run"
r = train(data=str(DATA / "banking77" / "train.jsonl"), output=out, max_steps=30, threads=1, red_flags="off")
print("trained", r.metrics["steps"], "steps in", r.metrics["seconds"], "s", flush=True)
base, tuned = load("smollm2"), load(out)
for path in (DEFAULT_PROBE, str(DATA / "forgetting-probe" / "validation.jsonl")):
    items = read_choice_file(path)
    s = {}
    for name, m in (("base", base), ("tuned", tuned)):
        s[name] = score_choices(items, choice_logprobs(m.model, m.tokenizer, items), choice_logprobs(m.model, m.tokenizer, items, null=True))
    for kind in ("correct", "correct_calibrated"):
        d = paired_difference(s["base"][kind], s["tuned"][kind])
        acc = "accuracy" if kind == "correct" else "accuracy_calibrated"
        print(str(path).split("/")[-1], kind, f"base {s['base'][acc]:.3f} tuned {s['tuned'][acc]:.3f} delta {d['delta']:+.3f} se {d['se']:.3f}", flush=True)
print("total", round(time.time() - t), "s")
