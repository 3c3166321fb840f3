"""The step engine: continuous batching, chunked prefill, prefix cache, fairness between adapters (tiny model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tailored.engine.core import StepEngine, run
from tailored.engine.lora import LoraBank
from tailored.engine.prefix import PrefixCache
from tailored.engine.sampling import GenerationSettings, Row
from tailored.engine.text import TextStream


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, LoraBank]:
    """The tiny base, its tokenizer, and a bank holding two different LoRA adapters (k/v included)."""
    from peft import LoraConfig, get_peft_model

    from tailored.models.load import load_model, load_tokenizer

    saved = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear",
                                                                       init_lora_weights=False), adapter_name="a")
    peft_model.add_adapter("b", LoraConfig(r=8, target_modules=["k_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(str(saved), selected_adapters=["a", "b"])
    base = load_model(tiny_model_dir).eval()
    bank = LoraBank(base)
    for name in ("a", "b"):
        bank.load(name, saved / name)
    return base, load_tokenizer(tiny_model_dir), bank


def rows(tok: Any, prompts: list[list[int]], adapters: list[str], *, seed: int = 0, tokens: int = 10) -> list[Row]:
    """Sampling rows (temperature 1, seeded): any difference in the logits shows as different tokens."""
    out = []
    for i, (ids, adapter) in enumerate(zip(prompts, adapters)):
        settings = GenerationSettings(max_new_tokens=tokens + 3 * (i % 4), temperature=1.0, ignore_eos=True)
        out.append(Row(ids, settings, TextStream(tok, set(), []), lambda text, finish: None, adapter=adapter,
                       generator=torch.Generator().manual_seed(seed + i)))
    return out


def prompts(tok: Any, lengths: list[int], shared: int = 0) -> list[list[int]]:
    system = tok("the label list: billing refund invoice bug crash login " * shared, add_special_tokens=False)["input_ids"]
    return [system + tok(f"question {i}: " + "have each way from " * n, add_special_tokens=False)["input_ids"]
            for i, n in enumerate(lengths)]


def test_rows_joining_a_running_batch_answer_as_they_would_alone(tiny: tuple) -> None:
    model, tok, bank = tiny
    ps = prompts(tok, [1, 30, 4, 12, 2, 50])
    adapters = ["__base__", "a", "b", "a", "__base__", "b"]
    alone = []
    for row in rows(tok, ps, adapters):
        run(StepEngine(model, bank=bank), [row])
        alone.append(row.stream.tokens)
    engine = StepEngine(model, bank=bank, max_rows=3, chunk=16, prefill_budget=16)
    together = rows(tok, ps, adapters)
    engine.add(together[:2])
    steps = 0
    while engine.busy:
        engine.step()
        steps += 1
        if steps == 3:  # the first rows are decoding: the others join the running batch
            assert engine.running
            engine.add(together[2:])
    assert [r.stream.tokens for r in together] == alone
    assert engine.stats["mixed_batches"] == 1 and engine.stats["batches"] == 1 and engine.stats["max_rows"] == 3


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(tiny: tuple) -> None:
    model, tok, _ = tiny
    short, long = rows(tok, prompts(tok, [1, 40]), ["__base__"] * 2, tokens=40)
    engine = StepEngine(model, chunk=32, prefill_budget=32)
    engine.add([short])
    engine.step()  # the short prompt is prefilled and decoding
    engine.add([long])
    chunks = -(-len(long.prompt_ids) // 32)
    counts = []
    while long.stream.count == 0:
        engine.step()
        counts.append(short.stream.count)
    assert len(counts) == chunks  # one chunk per step ...
    assert counts == list(range(counts[0], counts[0] + chunks))  # ... and the short row got a token at every step


def test_prefix_cache_answers_are_identical_under_mixed_adapters(tiny: tuple) -> None:
    model, tok, bank = tiny
    ps = prompts(tok, [1, 6, 3, 9, 2, 5], shared=12)  # a long shared system prompt, then each question
    adapters = ["a", "b", "__base__", "a", "b", "__base__"]
    plain = rows(tok, ps, adapters)
    run(StepEngine(model, bank=bank, max_rows=4, chunk=16), plain)
    cache = PrefixCache(64 * 2**20, block=16)
    engine = StepEngine(model, bank=bank, prefix=cache, max_rows=4)
    first, second = rows(tok, ps, adapters), rows(tok, ps, adapters)
    run(engine, first)
    hits = engine.stats["prefix_hit_tokens"]
    run(engine, second)
    expected = [r.stream.tokens for r in plain]
    assert [r.stream.tokens for r in first] == expected and [r.stream.tokens for r in second] == expected
    assert hits > 0  # rows after the first of each adapter reuse the system prompt already
    assert engine.stats["prefix_hit_tokens"] - hits >= 6 * (len(ps[0]) // 16 - 1) * 16
    namespaces = {key[0] for key in cache._blocks}
    assert len(namespaces) == 3  # base, a and b each computed their own blocks (a LoRA on k/v changes them)


def test_rows_admitted_together_are_prefilled_in_one_packed_pass(tiny: tuple) -> None:
    model, tok, bank = tiny
    ps = prompts(tok, [1, 5, 2, 8, 3])
    adapters = ["__base__", "a", "b", "a", "__base__"]
    alone = []
    for row in rows(tok, ps, adapters):
        run(StepEngine(model, bank=bank), [row])
        alone.append(row.stream.tokens)
    passes: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: passes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        engine = StepEngine(model, bank=bank, chunk=256)  # every prompt fits one chunk
        together = rows(tok, ps, adapters)
        engine.add(together)
        engine.step()
        assert passes == [(1, sum(len(p) for p in ps))]  # one pass, the five prompts packed, no padding
        assert len(engine.running) == 5
        run(engine, [])
    finally:
        hook.remove()
    assert [r.stream.tokens for r in together] == alone


def test_a_shared_prefix_is_computed_once_when_its_rows_arrive_together(tiny: tuple) -> None:
    model, tok, bank = tiny
    ps = prompts(tok, [1, 6, 3, 9], shared=12)
    common = next(i for i in range(len(ps[0])) if len({p[i] for p in ps}) > 1)  # tokens all four prompts share
    alone = rows(tok, ps, ["a"] * 4)[3]  # the same row (its seed and length), answered alone
    run(StepEngine(model, bank=bank), [alone])
    engine = StepEngine(model, bank=bank, prefix=PrefixCache(64 * 2**20, block=16))
    together = rows(tok, ps, ["a"] * 4)
    run(engine, together)
    shared = common // 16 * 16  # the blocks every prompt has in full
    assert engine.stats["prefill_tokens"] == shared + sum(len(p) - shared for p in ps)
    assert engine.stats["prefix_hit_tokens"] == 3 * shared
    assert together[3].stream.tokens == alone.stream.tokens


def test_prefix_cache_stays_under_its_memory_bound_and_drops_the_least_recently_used() -> None:
    def kv(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.randn(1, 2, n, 4), torch.randn(1, 2, n, 4))]

    block_bytes = 2 * 2 * 4 * 4 * 4  # keys + values of 4 tokens, 2 heads × 4 dims, float32
    cache = PrefixCache(5 * block_bytes, block=4)
    a, b = list(range(12)), list(range(100, 112))
    cache.store("m", a, kv(12), 12)  # 3 blocks
    cache.store("m", b, kv(12), 12)  # 3 more: over the bound, a's deepest block goes first
    assert cache.bytes <= 5 * block_bytes and len(cache) == 5
    assert cache.lookup("m", a, 12)[0] == 8  # a's two first blocks remain; the leaf went
    assert cache.lookup("m", b, 12)[0] == 12 and cache.lookup("other", b, 12)[0] == 0
    cache.store("m", list(range(200, 208)), kv(8), 8)  # a was used before b: a's blocks go now
    assert cache.lookup("m", a, 12)[0] == 0 and cache.lookup("m", b, 12)[0] == 12


def test_admission_is_fair_between_adapters(tiny: tuple) -> None:
    model, tok, bank = tiny
    ps = prompts(tok, [1] * 8)
    engine = StepEngine(model, bank=bank, max_rows=3)
    flood = rows(tok, ps[:6], ["a"] * 6, tokens=30)
    late = rows(tok, ps[6:], ["b", "__base__"], tokens=30)
    engine.add(flood + late)
    engine.step()
    admitted = [s.row for s in (*engine.prefilling, *engine.running)]
    assert {r.adapter for r in admitted} == {"a", "b", "__base__"}  # not three rows of the adapter that came first
    engine.clear()


def test_cancelled_and_failing_rows_leave_and_the_others_finish(tiny: tuple) -> None:
    model, tok, _ = tiny
    ok, cancelled, broken = rows(tok, prompts(tok, [2, 3, 4]), ["__base__"] * 3, tokens=12)
    cancelled.cancelled = lambda: cancelled.stream.count >= 3
    failures: list[BaseException] = []

    def emit(text: str, finish: str | None) -> None:
        raise RuntimeError("the client's callback broke")

    broken.emit, broken.fail = emit, failures.append
    (alone,) = rows(tok, [ok.prompt_ids], ["__base__"], tokens=12)
    run(StepEngine(model), [alone])
    engine = StepEngine(model)
    run(engine, [ok, cancelled, broken])
    assert ok.stream.tokens == alone.stream.tokens and cancelled.stream.count == 3
    assert len(failures) == 1 and engine.stats["cancelled_rows"] == 1 and engine.stats["failed_rows"] == 1
    assert engine.stats["active_rows"] == 0


def test_a_request_joins_the_servers_running_batch_and_finishes_first(tiny_model_dir: Path) -> None:
    import threading
    import time

    import openai

    from tailored.serve.server import start

    with start(base=str(tiny_model_dir), batch_wait_ms=0, max_tokens=400) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
        done: list[str] = []

        def ask(name: str, tokens: int) -> None:
            client.chat.completions.create(model="model", messages=[{"role": "user", "content": name}], max_tokens=tokens,
                                           temperature=0, extra_body={"ignore_eos": True})
            done.append(name)

        before = dict(srv.built.engine.stats)
        long = threading.Thread(target=ask, args=("long", 300))
        long.start()
        while srv.built.engine.stats["tokens"] - before["tokens"] < 20:  # the long answer is decoding
            time.sleep(0.01)
        ask("short", 5)
        long.join(120)
    stats = srv.built.engine.stats
    assert done == ["short", "long"]  # it did not wait for the running batch to end
    assert stats["batches"] - before["batches"] == 1 and stats["max_rows"] == 2 and stats["active_rows"] == 0
