"""Which near-duplicate detector should ``data clean`` use?  MinHash/LSH vs MiniLM embeddings.

Plants edited copies (case/punctuation, a typo, a word swapped, a word appended, whitespace) of real
examples from ../shared/data and measures, for each method and threshold:
  recall     — share of planted copies found,
  false pos. — pairs flagged among the *original* examples (distinct on purpose: dolly's duplicate
               prompts were removed; banking77 queries are distinct customer messages),
  seconds    — wall time for the whole set (1 thread).
Run: OMP_NUM_THREADS=1 .venv/bin/python bench/near_dup_methods.py
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tailored.cli.common import quiet  # noqa: E402
from tailored.data.near_dup import SHINGLE, cross_duplicates, greedy_dedupe  # noqa: E402
from tailored.models.embeddings import Embedder  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def edit(text: str, rng: random.Random) -> str:
    words = text.split()
    kind = rng.choice(["case", "typo", "swap", "append", "space"])
    if kind == "case":
        return text.upper().rstrip(".?!") + "!!"
    if kind == "typo" and len(text) > 4:
        i = rng.randrange(1, len(text) - 2)
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == "swap" and len(words) > 3:
        words[rng.randrange(len(words))] = rng.choice(["really", "please", "the", "very"])
        return " ".join(words)
    if kind == "append":
        return text + " " + rng.choice(["Thanks!", "please", "asap"])
    return "  ".join(words)


def load(name: str, n: int) -> list[str]:
    rows = [json.loads(line) for line in (SHARED / name / "train.jsonl").open()][:n]
    return [" ".join(m["content"] for m in r["messages"] if m["role"] != "system") for r in rows]


def main() -> None:
    quiet()
    if not SHARED.is_dir():
        sys.exit("needs ../shared/data")
    rng = random.Random(0)
    print(f"{'data':10} {'method':22} {'recall':>7} {'false pos.':>10} {'seconds':>8}")
    embedder = Embedder()
    for name, n in (("banking77", 1000), ("dolly-open-qa", 600)):
        originals = load(name, n)
        planted = [edit(t, rng) for t in rng.sample(originals, 100)]
        for th in (0.6, 0.7, 0.8):
            t0 = time.perf_counter()
            fp = len(greedy_dedupe(originals, th))
            found = len(cross_duplicates(originals, planted, th))
            print(f"{name:10} {f'minhash k={SHINGLE} J>={th}':22} {found / len(planted):7.2f} {fp:10d} {time.perf_counter() - t0:8.1f}")
        t0 = time.perf_counter()
        emb = embedder.encode(originals)
        pemb = embedder.encode(planted)
        sims = emb @ emb.T
        sims.fill_diagonal_(0)
        cross = (pemb @ emb.T).max(1).values
        secs = time.perf_counter() - t0
        for th in (0.9, 0.95):
            fp = int((sims >= th).triu().sum())
            print(f"{name:10} {f'MiniLM cos>={th}':22} {float((cross >= th).float().mean()):7.2f} {fp:10d} {secs:8.1f}")


if __name__ == "__main__":
    main()
