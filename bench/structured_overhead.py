"""Per-token cost of three maintained grammar engines on CPU, with the embedded model's tokenizer.

For xgrammar, llguidance and outlines-core: compile a JSON schema (nested objects, enums, an array),
a regex and a choice, then replay a valid answer token by token -- compute the allowed-token mask,
apply it to a logits row of the model's vocabulary size, advance the matcher -- and time it. The
reference in the same run is one decode step of the embedded model (batch 1, KV cache), so the
printed ratio is the share a constraint adds to each generated token. "1st tok" is the first mask
(engines that compile lazily pay there); "answer ms" is compile + every step of the whole answer
(first run, once: per-request cost with an empty cache); the other columns are medians of 3 replays.

    nice -n 10 .venv/bin/python bench/structured_overhead.py [--tokens 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["refund", "card_lost", "balance", "transfer_failed"]},
        "confidence": {"type": "number"},
        "customer": {"type": "object", "properties": {"name": {"type": "string"}, "vip": {"type": "boolean"}},
                     "required": ["name", "vip"], "additionalProperties": False},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["urgent", "billing", "card"]}},
    },
    "required": ["intent", "confidence", "customer", "tags"],
    "additionalProperties": False,
}
ANSWER = json.dumps({"intent": "card_lost", "confidence": 0.93, "customer": {"name": "Ada Lovelace", "vip": True},
                     "tags": ["urgent", "card"]}, separators=(", ", ": "))
REGEX = r"[0-9]{3}-[0-9]{4} [a-z]+ [a-z]+"
REGEX_ANSWER = "555-0199 call back"
CHOICES = ["refund", "card_lost", "balance", "transfer_failed"]


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
        self.compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)
        self.mask = xgr.allocate_token_bitmask(1, vocab)

    def compile(self, kind: str, spec: Any) -> Any:
        c = self.compiler
        if kind == "json":
            return c.compile_json_schema(json.dumps(spec), any_whitespace=False)
        if kind == "regex":
            return c.compile_regex(spec)
        return c.compile_grammar(choice_ebnf(spec))

    def start(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def step(self, m: Any, logits: torch.Tensor, token: int) -> None:
        m.fill_next_token_bitmask(self.mask)
        self.xgr.apply_token_bitmask_inplace(logits, self.mask)
        assert m.accept_token(token), token


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.ll, self.llt = llguidance, llguidance.torch
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
        self.mask = llguidance.torch.allocate_token_bitmask(1, vocab)

    def compile(self, kind: str, spec: Any) -> Any:
        M = self.ll.LLMatcher
        if kind == "json":
            return M.grammar_from_json_schema(spec, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "})
        if kind == "regex":
            return M.grammar_from_regex(spec)
        return M.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in spec))

    def start(self, compiled: Any) -> Any:
        m = self.ll.LLMatcher(self.tok, compiled)
        assert not m.is_error(), m.get_error()
        return m

    def step(self, m: Any, logits: torch.Tensor, token: int) -> None:
        self.llt.fill_next_token_bitmask(m, self.mask, 0)
        self.llt.apply_token_bitmask_inplace(logits, self.mask)
        assert m.consume_token(token), m.get_error()


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        import outlines_core

        self.oc = outlines_core
        table: dict[bytes, list[int]] = {}
        for token_id, raw in enumerate(token_bytes(tokenizer)):
            if raw is not None and token_id != tokenizer.eos_token_id:
                table.setdefault(raw, []).append(token_id)
        self.vocab = outlines_core.Vocabulary(tokenizer.eos_token_id, table)
        self.size = vocab

    def compile(self, kind: str, spec: Any) -> Any:
        from outlines_core.json_schema import build_regex_from_schema

        if kind == "json":
            regex = build_regex_from_schema(json.dumps(spec))
        elif kind == "regex":
            regex = spec
        else:
            regex = "(" + "|".join(_escape(c) for c in spec) + ")"
        return self.oc.Index(regex, self.vocab)

    def start(self, compiled: Any) -> Any:
        return self.oc.Guide(compiled)

    def step(self, g: Any, logits: torch.Tensor, token: int) -> None:
        allowed = torch.tensor(g.get_tokens())
        keep = torch.full_like(logits, float("-inf"))
        keep[0, allowed] = logits[0, allowed]
        logits.copy_(keep)
        g.advance(token)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def choice_ebnf(choices: list[str]) -> str:
    return "root ::= " + " | ".join(json.dumps(c) for c in choices)


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """Each id's bytes for a byte-level BPE vocabulary (GPT-2's printable-unicode mapping); None for specials."""
    from tailored.engine.logprobs import byte_level_table

    table = byte_level_table()
    special = set(tokenizer.all_special_ids)
    out: list[bytes | None] = []
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        out.append(None if i in special or any(ch not in table for ch in piece) else bytes(table[ch] for ch in piece))
    return out


def replay(engine: Any, kind: str, spec: Any, tokens: list[int], vocab: int) -> dict[str, float]:
    t0 = time.perf_counter()
    compiled = engine.compile(kind, spec)
    compile_s = time.perf_counter() - t0
    times, first, totals = [], [], []
    for _ in range(3):
        start = time.perf_counter()
        m = engine.start(compiled)
        for k, t in enumerate(tokens):
            logits = torch.randn(1, vocab)
            s = time.perf_counter()
            engine.step(m, logits, t)
            (first if k == 0 else times).append(time.perf_counter() - s)
            assert torch.isfinite(logits[0, t]), f"{engine.name} masked out the answer's token {t}"
        totals.append(time.perf_counter() - start)
    return {"compile_ms": compile_s * 1e3, "first_token_us": first[0] * 1e6,
            "answer_ms": (compile_s + totals[0]) * 1e3, "tokens": len(tokens), "per_token_us": statistics.median(times) * 1e6,
            "p99_token_us": sorted(times)[int(0.99 * (len(times) - 1))] * 1e6}


def decode_step_ms(model: Any, steps: int = 20) -> float:
    from transformers import DynamicCache

    ids = torch.tensor([[1] * 64])
    with torch.no_grad():
        cache = DynamicCache()
        model(input_ids=ids, cache=cache, use_cache=True)
        times = []
        for _ in range(steps):
            s = time.perf_counter()
            model(input_ids=ids[:, :1], cache=cache, use_cache=True, logits_to_keep=1)
            times.append(time.perf_counter() - s)
    return statistics.median(times) * 1e3


def end_to_end(model: Any, tokenizer: Any, rows: int = 1, tokens: int = 40) -> dict[str, float]:
    """The serve decode loop (``run_batch``): free text vs held to :data:`SCHEMA`, ms per generated token.

    One row, sampled, so every step has the same batch; the prefill (timed alone: one token) is
    subtracted, so an answer that finishes its JSON early is not charged more of it.
    """
    from tailored.engine.constraints import Structure
    from tailored.engine.constraints import compile as compile_constraint
    from tailored.eval.generate import GenerationSettings
    from tailored.serve.decode import Row, TextStream, run_batch

    stop = [int(tokenizer.eos_token_id)]
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Triage: my card was lost, I am a VIP."}],
                                         tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    grammar = compile_constraint(Structure("json_schema", SCHEMA), tokenizer, stop)
    out: dict[str, float] = {}
    for name in ("prefill", "free", "json_schema"):
        batch = []
        for i in range(rows):
            s = GenerationSettings(max_new_tokens=1 if name == "prefill" else tokens, temperature=0.7,
                                   ignore_eos=name != "json_schema")
            hooks = [grammar.start()] if name == "json_schema" else []
            batch.append(Row(prompt, s, TextStream(tokenizer, set() if s.ignore_eos else set(stop), []),
                             lambda text, finish: None, generator=torch.Generator().manual_seed(i), hooks=hooks))
        start = time.perf_counter()
        generated = run_batch(model, batch, stop[0])
        elapsed = (time.perf_counter() - start) * 1e3
        out[name] = elapsed if name == "prefill" else (elapsed - out["prefill"]) / max(generated - rows, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from tailored.models.load import load_model, load_tokenizer, local_folder

    folder = local_folder("smollm2")
    tokenizer = load_tokenizer(folder)
    model = load_model(folder).eval()
    vocab = int(model.config.vocab_size)
    step_ms = decode_step_ms(model)
    print(f"reference: one decode step of the embedded model (1 thread, batch 1): {step_ms:.1f} ms")
    cases = [("json", SCHEMA, ANSWER), ("regex", REGEX, REGEX_ANSWER), ("choice", CHOICES, "transfer_failed")]
    results: dict[str, Any] = {"decode_step_ms": step_ms, "engines": {}}
    print(f"{'engine':<14} {'setup s':>8} {'case':<7} {'compile ms':>10} {'1st tok µs':>10} {'µs/token':>9} {'p99 µs':>8} "
          f"{'answer ms':>9} {'% of step':>9}")
    for cls in (XGrammar, LLGuidance, OutlinesCore):
        t0 = time.perf_counter()
        engine = cls(tokenizer, vocab)
        setup = time.perf_counter() - t0
        results["engines"][cls.name] = {"setup_s": setup}
        for kind, spec, answer in cases:
            tokens = tokenizer(answer, add_special_tokens=False)["input_ids"]
            r = replay(engine, kind, spec, tokens, vocab)
            results["engines"][cls.name][kind] = r
            print(f"{cls.name:<14} {setup:8.2f} {kind:<7} {r['compile_ms']:10.1f} {r['first_token_us']:10.0f} "
                  f"{r['per_token_us']:9.0f} "
                  f"{r['p99_token_us']:8.0f} {r['answer_ms']:9.1f} {100 * r['per_token_us'] / 1e3 / step_ms:8.1f}%")
    e2e = end_to_end(model, tokenizer)
    results["end_to_end_ms_per_token"] = e2e
    print(f"serve decode loop (run_batch), 1 row, sampled, prefill subtracted: free {e2e['free']:.1f} ms/token · "
          f"held to the JSON schema {e2e['json_schema']:.1f} ms/token · ratio {e2e['json_schema'] / e2e['free']:.3f}")
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
