"""Near-duplicate detection: MinHash + LSH over character 5-gram shingles of normalised text.

Why MinHash rather than sentence embeddings (measured in ``bench/near_dup_methods.py``, figures in
``docs/data-and-estimate.md``): a near-duplicate is a *copy* with small edits (case, punctuation,
typos, a word changed), which is exactly what character-shingle Jaccard measures. Embeddings also
score *paraphrases* as similar, so on classification data (many differently worded queries with the
same intent) they flag distinct, useful examples; they are also ~100× slower and need a model.

LSH only proposes candidates; every candidate pair is confirmed with the exact Jaccard similarity of
the shingle sets, so reported pairs never rest on the MinHash approximation alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable

from tailored.data.text_quality import normalize

DEFAULT_THRESHOLD = 0.8
NUM_PERM = 128
SHINGLE = 5


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    """Character ``k``-grams of the normalised text (the whole text when it is shorter)."""
    norm = normalize(text)
    if len(norm) <= k:
        return {norm}
    return {norm[i : i + k] for i in range(len(norm) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class NearDupIndex:
    """An LSH index of texts; ``query`` returns the indexed keys whose exact Jaccard ≥ ``threshold``.

    Args:
        threshold: Jaccard similarity of the shingle sets at or above which two texts are near-duplicates.
        num_perm: MinHash permutations (more: fewer missed pairs, slower).
    """

    threshold: float = DEFAULT_THRESHOLD
    num_perm: int = NUM_PERM
    _sets: dict[Hashable, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from datasketch import MinHashLSH

        # The LSH threshold sits a little below ours so that borderline pairs still become candidates.
        self._lsh = MinHashLSH(threshold=max(0.05, self.threshold - 0.1), num_perm=self.num_perm)

    def _minhash(self, sh: set[str]):  # noqa: ANN202 - datasketch type
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch([s.encode("utf-8") for s in sh])
        return m

    def add(self, key: Hashable, text: str) -> None:
        sh = shingles(text)
        self._sets[key] = sh
        self._lsh.insert(key, self._minhash(sh))

    def query(self, text: str) -> list[tuple[Hashable, float]]:
        """Indexed keys that are near-duplicates of ``text``, most similar first."""
        sh = shingles(text)
        hits = [(k, jaccard(sh, self._sets[k])) for k in self._lsh.query(self._minhash(sh))]
        return sorted([(k, s) for k, s in hits if s >= self.threshold], key=lambda kv: -kv[1])

    def __len__(self) -> int:
        return len(self._sets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._sets


def greedy_dedupe(texts: Iterable[str], threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, int, float]]:
    """Walk ``texts`` in order; each text similar to an earlier *kept* one is a duplicate of it.

    Returns ``(duplicate_index, kept_index, jaccard)`` triples; the first of every group is kept.
    """
    index = NearDupIndex(threshold)
    dups = []
    for i, text in enumerate(texts):
        hits = index.query(text)
        if hits:
            dups.append((i, int(hits[0][0]), round(hits[0][1], 3)))
        else:
            index.add(i, text)
    return dups


def clusters(texts: list[str], threshold: float = DEFAULT_THRESHOLD) -> list[list[int]]:
    """Groups (2 or more) of mutually reachable near-duplicates, as sorted index lists."""
    groups: dict[int, list[int]] = {}
    for dup, kept, _ in greedy_dedupe(texts, threshold):
        groups.setdefault(kept, [kept]).append(dup)
    return sorted(sorted(g) for g in groups.values())


def cross_duplicates(reference: list[str], others: list[str], threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, int, float]]:
    """``(other_index, reference_index, jaccard)`` for every text of ``others`` near a ``reference`` text."""
    index = NearDupIndex(threshold)
    for i, text in enumerate(reference):
        index.add(i, text)
    out = []
    for j, text in enumerate(others):
        hits = index.query(text)
        if hits:
            out.append((j, int(hits[0][0]), round(hits[0][1], 3)))
    return out
