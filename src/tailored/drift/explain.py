"""What makes the traffic different, in words a person can act on: distinctive words, refusals, lengths."""

from __future__ import annotations

import math
import re
from collections import Counter

WORD = re.compile(r"[a-z][a-z'\-]+")
STOP = frozenset("""a an and are as at be been but by can could do does did for from had has have how i if in into is it
its me my no not of on or our so than that the their them then there these they this to too was we were what when where
which who why will with would you your""".split())
# Opening words of a refusal ("I'm sorry, but I can't ..."), in the first 120 characters of an answer.
REFUSAL = re.compile(r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t|i am unable|i'?m unable|i'?m not able|"
                     r"as an ai|i do not have (?:access|the ability)|i don'?t have (?:access|the ability))\b", re.I)


def is_refusal(answer: str) -> bool:
    return bool(REFUSAL.search(answer[:120]))


def words(text: str) -> set[str]:
    """The content words of ``text`` (lower-cased, stop words out), once each."""
    return {w for w in WORD.findall(text.lower()) if w not in STOP and len(w) > 2}


def distinctive_words(reference: list[str], current: list[str], top: int = 10, min_count: int = 3) -> list[dict]:
    """Words over-represented in ``current``: log-odds ratio with an informative Dirichlet prior (Monroe et al. 2008).

    Counted once per text (document frequency), so one long text does not dominate. Each entry has the
    word, its z-score and the share of current and reference texts holding it.
    """
    ref = Counter(w for t in reference for w in words(t))
    cur = Counter(w for t in current for w in words(t))
    prior = ref + cur
    a0 = sum(prior.values()) or 1
    n_ref, n_cur = sum(ref.values()) or 1, sum(cur.values()) or 1
    out = []
    for w, c in cur.items():
        if c < min_count:
            continue
        a = prior[w] * 100 / a0 + 0.01  # prior scaled to 100 pseudo-counts in all
        r = ref.get(w, 0)
        delta = math.log((c + a) / (n_cur + 100 - c - a)) - math.log((r + a) / (n_ref + 100 - r - a))
        z = delta / math.sqrt(1 / (c + a) + 1 / (r + a))
        out.append({"word": w, "z": round(z, 2), "traffic_share": round(c / max(len(current), 1), 4),
                    "training_share": round(r / max(len(reference), 1), 4)})
    return sorted((o for o in out if o["z"] > 1.96), key=lambda o: -o["z"])[:top]


def length(text: str) -> float:
    """log(1 + words): length shifts compared on a log scale (a few long inputs must not dominate)."""
    return math.log1p(len(text.split()))
