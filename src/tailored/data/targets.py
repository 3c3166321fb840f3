"""What the training targets teach, checked before training: warnings for targets a model can only collapse on.

Three patterns, each a ``data check`` warning with line numbers (they never stop training):

- ``dominant_answer``: one answer is most of the targets (≥ 50% among 3+ distinct answers, or ≥ 80%
  whatever their number), or a few (3) are ≥ 60% of targets among 10+ distinct ones. A model learns to
  give that answer to everything, and a validation loss still falls.
- ``template_answers``: most distinct targets of 5+ words (≥ 50%, estimated on a sample of 200) are
  near-copies of one template (character 5-gram Jaccard ≥ 0.6): slot-filled boilerplate, not answers.
- ``answer_repeats_prompt``: ≥ 30% of answers are (nearly) the prompt itself (Jaccard ≥ 0.8): the model
  learns to echo.

A label set with balanced labels (banking77: 77 intents, about 1.3% each) raises none of them.
"""

from __future__ import annotations

from collections import Counter

from tailored.data.near_dup import DEFAULT_THRESHOLD, jaccard, shingles
from tailored.data.records import Example, Problem
from tailored.data.text_quality import normalize

MIN_EXAMPLES = 20  # below this shares are too coarse to warn on
TEMPLATE_THRESHOLD = 0.6
TEMPLATE_MIN_WORDS = 5
ECHO_SHARE = 0.3


def _user_text(ex: Example) -> str:
    users = [m for m in ex.messages if m.get("role") == "user"]
    return str(users[-1].get("content") or "") if users else ""


def _lines(examples: list[Example], keep: list[int], limit: int = 8) -> str:
    shown = [str(examples[i].line) for i in keep[:limit]]
    return ", ".join(shown) + (f" and {len(keep) - limit} more" if len(keep) > limit else "")


def _template_share(rows: list[tuple[int, str]], sample: int = 200, centres: int = 20) -> tuple[float, list[int]] | None:
    """(share of the sampled long targets within Jaccard ≥ 0.6 of one of them, their positions), best centre.

    Identical answers count once per distinct text: a repeated answer is ``dominant_answer``'s, not a template.
    A template covering half the targets is found unless all ``centres`` random picks miss it (p < 1e-6).
    """
    import random

    distinct: dict[str, int] = {}
    for i, a in rows:
        if len(a.split()) >= TEMPLATE_MIN_WORDS:
            distinct.setdefault(a, i)
    if len(distinct) < MIN_EXAMPLES:
        return None
    rng = random.Random(0)
    texts = rng.sample(sorted(distinct), min(sample, len(distinct)))
    sets = [shingles(t) for t in texts]
    best: list[int] = []
    for c in rng.sample(range(len(texts)), min(centres, len(texts))):
        near = [j for j in range(len(texts)) if jaccard(sets[c], sets[j]) >= TEMPLATE_THRESHOLD]
        if len(near) > len(best):
            best = near
    return len(best) / len(texts), sorted(distinct[texts[j]] for j in best)


def target_problems(examples: list[Example]) -> list[Problem]:
    """The warnings above for the examples' assistant answers (none for text or preference data)."""
    rows = [(i, normalize(ex.assistant_text())) for i, ex in enumerate(examples) if ex.messages and ex.chosen is None]
    rows = [(i, a) for i, a in rows if a]
    n = len(rows)
    if n < MIN_EXAMPLES:
        return []
    out: list[Problem] = []
    counts = Counter(a for _, a in rows)
    top = counts.most_common(3)
    top1, share1 = top[0][0], top[0][1] / n
    share3 = sum(c for _, c in top) / n
    k = len(counts)
    if (share1 >= 0.5 and k >= 3) or share1 >= 0.8:
        first = next(i for i, a in rows if a == top1)
        out.append(Problem(examples[first].line, "dominant_answer",
                           f"{share1:.0%} of the targets ({top[0][1]} of {n}) are the same answer {top1[:60]!r}: the model "
                           "learns to give it to everything; add examples with other answers, or drop most of these",
                           severity="warning"))
    elif share3 >= 0.6 and k >= 10:
        out.append(Problem(0, "dominant_answer",
                           f"3 answers are {share3:.0%} of the targets (of {k} distinct): "
                           + ", ".join(f"{a[:30]!r} {c}" for a, c in top) + "; balance the answers", severity="warning"))
    template = _template_share(rows)
    if template is not None and template[0] >= 0.5:
        share, members = template
        out.append(Problem(examples[members[0]].line, "template_answers",
                           f"about {share:.0%} of the targets are near-copies of one template (e.g. lines "
                           f"{_lines(examples, members, 4)}): the model learns the template, not the answers; vary them",
                           severity="warning"))
    echoes = [i for i, a in rows if (u := normalize(_user_text(examples[i]))) and
              (a == u or (0.6 <= len(a) / len(u) <= 1.7 and jaccard(shingles(a), shingles(u)) >= DEFAULT_THRESHOLD))]
    if len(echoes) / n >= ECHO_SHARE:
        out.append(Problem(examples[echoes[0]].line, "answer_repeats_prompt",
                           f"{len(echoes) / n:.0%} of the answers ({len(echoes)} of {n}) repeat their prompt (lines "
                           f"{_lines(examples, echoes)}): the model learns to echo; check the answer column", severity="warning"))
    return out
