"""Structured outputs: an answer constrained to a JSON schema, any JSON object, a regex or a fixed choice.

The grammar engine is xgrammar (chosen by ``bench/structured_overhead.py`` against llguidance and
outlines-core: see docs/serving.md). A :class:`Structure` says what the answer must be; :func:`compile`
turns it into a grammar for one tokenizer (cached), raising :class:`ConstraintError` for a schema or a
regex the engine cannot use, so a server can refuse the request before queueing it;
:meth:`Grammar.start` gives one decode row its :class:`RowConstraint` hook. At every step the hook
masks the tokens that cannot continue a valid answer; once the answer is complete only the stop tokens
remain, so a constrained answer always parses -- unless the token limit cuts it (finish reason
``length``).

JSON is generated compact (``{"a": 1, "b": [2, 3]}``, no free whitespace): a small model given
whitespace freedom can fill its token budget with newlines and never close the object.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import torch

from tailored.errors import TailoredError

Kind = Literal["json_object", "json_schema", "regex", "choice"]
KINDS: tuple[str, ...] = ("json_object", "json_schema", "regex", "choice")


class ConstraintError(TailoredError):
    """A constraint the grammar engine cannot compile (a bad schema or regex, an empty choice)."""


@dataclass(frozen=True)
class Structure:
    """What an answer must be.

    ``kind``: ``json_object`` (any JSON object), ``json_schema`` (``value``: the schema, a dict),
    ``regex`` (``value``: a pattern the whole answer matches) or ``choice`` (``value``: the allowed
    answers, exactly). ``strict`` is OpenAI's flag of a json_schema: the schema is then followed
    exactly (no properties beyond those named); without it xgrammar's lenient reading applies.
    """

    kind: Kind
    value: Any = None
    strict: bool = False

    @staticmethod
    def choice(labels: list[str]) -> Structure:
        return Structure("choice", tuple(labels))

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {len(self.value)} choices"
        return {"json_object": "a JSON object", "json_schema": "JSON matching the schema",
                "regex": f"text matching /{self.value}/"}[self.kind]


class Grammar:
    """A compiled constraint for one tokenizer; :meth:`start` makes a fresh matcher for each row."""

    def __init__(self, compiled: Any, vocab: int) -> None:
        self.compiled, self.vocab = compiled, vocab

    def start(self) -> RowConstraint:
        import xgrammar as xgr

        return RowConstraint(xgr.GrammarMatcher(self.compiled), self.vocab)


class RowConstraint:
    """One row's grammar state as a :class:`~tailored.engine.hooks.RowHook`: mask, then advance."""

    def __init__(self, matcher: Any, vocab: int) -> None:
        import xgrammar as xgr

        self.matcher, self.vocab = matcher, vocab
        self.bitmask = xgr.allocate_token_bitmask(1, vocab)
        self.steps = 0

    def process(self, logits: torch.Tensor) -> None:
        import xgrammar as xgr

        if self.matcher.is_terminated():
            return
        self.matcher.fill_next_token_bitmask(self.bitmask)
        row = logits[None, :]
        if row.shape[-1] > self.vocab:  # the model's embedding is padded beyond the tokenizer's ids
            row[:, self.vocab :] = float("-inf")
        mask = self.bitmask if row.device.type == "cpu" else self.bitmask.to(row.device)
        xgr.apply_token_bitmask_inplace(row, mask, vocab_size=min(row.shape[-1], self.vocab))

    def accept(self, token: int) -> None:
        self.steps += 1
        if not self.matcher.is_terminated() and not self.matcher.accept_token(token):
            raise ConstraintError(f"token {token} does not continue the constrained answer (step {self.steps})")

    @property
    def finished(self) -> bool:
        """A stop token was accepted: the answer is complete."""
        return bool(self.matcher.is_terminated())


class _Compilers:
    """One xgrammar compiler per (tokenizer, stop tokens), built on first use (~0.5 s) and kept with the tokenizer."""

    def __init__(self) -> None:
        self._by_tokenizer: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], tuple[Any, int]]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, tokenizer: Any, stop_ids: tuple[int, ...]) -> tuple[Any, int]:
        import xgrammar as xgr

        with self._lock:
            per = self._by_tokenizer.setdefault(tokenizer, {})
            if stop_ids not in per:
                vocab = len(tokenizer)
                info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=list(stop_ids) or None)
                per[stop_ids] = (xgr.GrammarCompiler(info, max_threads=1), vocab)
            return per[stop_ids]


_COMPILERS = _Compilers()


def choice_grammar(choices: list[str] | tuple[str, ...]) -> str:
    """EBNF whose only sentences are ``choices``, exactly (JSON string escapes are EBNF's too)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


def compile(structure: Structure, tokenizer: Any, stop_ids: list[int] | tuple[int, ...]) -> Grammar:  # noqa: A001
    """The grammar of ``structure`` for ``tokenizer`` (its stop tokens end a complete answer).

    Raises:
        ConstraintError: the schema, regex or choice cannot be compiled; the message says why.
    """
    compiler, vocab = _COMPILERS.get(tokenizer, tuple(sorted(set(stop_ids))))
    kind, value = structure.kind, structure.value
    try:
        if kind == "json_object":
            compiled = compiler.compile_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)
        elif kind == "json_schema":
            schema = value if isinstance(value, str) else json.dumps(value)
            compiled = compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=structure.strict)
        elif kind == "regex":
            compiled = compiler.compile_regex(str(value))
        elif kind == "choice":
            choices = [str(c) for c in value or ()]
            if not choices or any(c == "" for c in choices):
                raise ConstraintError("a choice constraint needs at least one choice, none of them empty")
            compiled = compiler.compile_grammar(choice_grammar(choices))
        else:
            raise ConstraintError(f"unknown constraint kind {kind!r}; expected one of {', '.join(KINDS)}")
    except ConstraintError:
        raise
    except Exception as exc:  # xgrammar raises RuntimeError / ValueError with the parser's message
        what = {"json_schema": "JSON schema", "regex": "regex", "choice": "choice list"}.get(kind, kind)
        raise ConstraintError(f"the {what} cannot be used as a constraint: {str(exc).strip().splitlines()[0][:300]}",
                              hint="check it against the JSON Schema / regex syntax the server documents "
                                   "(docs/serving.md, structured outputs)") from None
    return Grammar(compiled, vocab)
