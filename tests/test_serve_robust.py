"""The server under bad input and bad state: one request or one run folder never takes the others down.

Real uvicorn servers on 127.0.0.1 and the official ``openai`` SDK (strict validation) or raw ``httpx``;
the only stand-in is a small object in place of vLLM's engine (vLLM cannot run here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
import torch

import tailored
from tailored.errors import CheckpointError, ConfigError
from tailored.serve.server import start
from tailored.testing.tiny import WORDS

KEY = "robust-key"
MSGS = [{"role": "user", "content": "have each way from"}]
AUTH = {"authorization": f"Bearer {KEY}"}


def sdk(srv: Any, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0, _strict_response_validation=True)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoRA run (a few steps: only its folder's shape matters here)."""
    out = tmp_path_factory.mktemp("lora") / "run"
    rng = random.Random(0)
    rows = [{"messages": [{"role": "user", "content": " ".join(rng.choice(WORDS[:60]) for _ in range(4))},
                          {"role": "assistant", "content": "billing refund"}]} for _ in range(16)]
    data = out.parent / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tailored.train(data=str(data), model=str(tiny_model_dir), method="lora", max_steps=3, learning_rate_multiplier=300,
                   batch_size=8, max_seq_length=64, threads=1, red_flags="off", output=str(out))
    return out


def concurrently(*calls: Any) -> list[Any]:
    """Run the calls at the same moment in threads; each result, or the exception it raised."""
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


# --- 1. one request cannot fail the batch it shares -------------------------------------------------


def test_tiny_temperature_in_a_shared_batch_fails_neither_request(tiny_model_dir: Path) -> None:
    """temperature 1e-40 used to overflow the logits (inf, NaN softmax, multinomial raised) and fail the batch."""
    with start(base=str(tiny_model_dir), batch_wait_ms=500, max_tokens=16) as srv:
        client = sdk(srv, "x")

        def ask(**kw: Any) -> str:
            return client.chat.completions.create(model="model", messages=MSGS, max_tokens=8, **kw).choices[0].message.content

        greedy = ask(temperature=0)
        before = srv.built.engine.stats["batches"]
        poisoned, other = concurrently(lambda: ask(temperature=1e-40, seed=1), lambda: ask(temperature=0))
        assert srv.built.engine.stats["batches"] - before == 1  # both shared one batch
        assert other == greedy
        assert poisoned == greedy  # sampling as the temperature goes to 0 is greedy decoding


def test_seed_is_validated_and_seeds_near_the_limit_work(tiny_model_dir: Path) -> None:
    with start(base=str(tiny_model_dir), max_tokens=16) as srv:
        client = sdk(srv, "x")
        for seed in (2**63, 2**64, -(2**63) - 1):
            with pytest.raises(openai.BadRequestError) as err:
                client.chat.completions.create(model="model", messages=MSGS, max_tokens=4, temperature=1, seed=seed)
            assert err.value.param == "seed", seed
        for seed in (2**63 - 1, -(2**63)):  # choice i uses seed + i: the last choices wrap, they do not overflow
            out = client.chat.completions.create(model="model", messages=MSGS, max_tokens=4, temperature=1, seed=seed, n=3)
            assert len(out.choices) == 3
        for value in ("NaN", "Infinity"):  # Python's JSON reads these; pydantic must refuse them
            raw = httpx.post(srv.url + "/chat/completions", timeout=60,
                             content=f'{{"model": "model", "messages": {json.dumps(MSGS)}, "temperature": {value}}}'.encode())
            assert raw.status_code == 400 and raw.json()["error"]["param"] == "temperature", value


def test_a_row_that_fails_leaves_the_batch_and_the_other_rows_finish(tiny_model_dir: Path) -> None:
    from tailored.eval.generate import GenerationSettings
    from tailored.models.load import load_model, load_tokenizer
    from tailored.serve.decode import Row, TextStream, run_batch

    model, tok = load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    prompt = tok("have each way from", add_special_tokens=False)["input_ids"]

    def row(emit: Any, fail: Any = None, temperature: float = 0.0) -> Row:
        settings = GenerationSettings(max_new_tokens=10, temperature=temperature, ignore_eos=True)
        return Row(prompt, settings, TextStream(tok, set(), []), emit, fail=fail,
                   generator=torch.Generator().manual_seed(0) if temperature else None)

    alone: list[str] = []
    run_batch(model, [row(lambda text, finish: alone.append(text))], int(tok.pad_token_id))

    def broken_emit(text: str, finish: str | None) -> None:
        raise RuntimeError("the client's callback broke")

    failures: list[BaseException] = []
    together: list[str] = []
    run_batch(model, [row(broken_emit, failures.append), row(lambda text, finish: together.append(text))],
              int(tok.pad_token_id))
    assert "".join(together) == "".join(alone) and len(together) == len(alone)
    assert len(failures) == 1 and "callback broke" in str(failures[0])


def test_sampling_is_nan_safe() -> None:
    from tailored.eval.generate import GenerationSettings
    from tailored.serve.decode import Row, pick_tokens

    def row(t: float) -> Row:
        return Row([1], GenerationSettings(temperature=t), None, None, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]

    logits = torch.tensor([[0.0, 30.0, 29.0, -float("inf")]] * 3)
    assert pick_tokens(logits, [row(1e-40), row(1e-7), row(1e-3)]) == [1, 1, 1]
    wild = torch.tensor([[3e38, -3e38, 0.0, 1.0]])  # finite, but dividing by a small temperature overflows
    assert pick_tokens(wild, [row(0.01)]) == [0]
    with pytest.raises(Exception, match="non-finite"):  # NaN logits: that row fails, with a clear reason
        pick_tokens(torch.tensor([[float("nan"), 1.0]]), [row(1.0)])


# --- 2. request size ---------------------------------------------------------------------------------


def test_body_over_the_limit_answers_413_before_it_is_read(tiny_model_dir: Path) -> None:
    with start(base=str(tiny_model_dir), max_request_bytes=20_000, api_key=KEY) as srv:
        big = json.dumps({"model": "model", "messages": [{"role": "user", "content": "word " * 10_000}]}).encode()
        for content in (big, iter([big[i:i + 4096] for i in range(0, len(big), 4096)])):  # with and without content-length
            r = httpx.post(srv.url + "/chat/completions", content=content, headers=AUTH, timeout=60)
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "request_too_large" and "20000" in r.json()["error"]["message"]
            assert r.headers["x-request-id"].startswith("req_")
        with pytest.raises(openai.APIStatusError) as err:
            sdk(srv).chat.completions.create(model="model", messages=[{"role": "user", "content": "word " * 10_000}])
        assert err.value.status_code == 413
        small = sdk(srv).chat.completions.create(model="model", messages=MSGS, max_tokens=2)
        assert small.choices[0].message.content is not None
        no_key = httpx.post(srv.url + "/chat/completions", content=big, timeout=60)
        assert no_key.status_code == 401  # who may send is asked first


def test_messages_too_long_for_the_context_are_refused_before_tokenizing(tiny_model_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tailored.eval.generate import ChatModel

    calls: list[int] = []
    real = ChatModel.prompt_ids
    monkeypatch.setattr(ChatModel, "prompt_ids", lambda self, messages: calls.append(1) or real(self, messages))
    with start(base=str(tiny_model_dir), max_request_bytes=4_000_000) as srv:
        with pytest.raises(openai.BadRequestError) as err:
            sdk(srv, "x").chat.completions.create(model="model", max_tokens=4,
                                                  messages=[{"role": "user", "content": "water " * 300_000}])
        assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
        assert "characters" in err.value.message
        assert calls == []  # refused without rendering or tokenizing 1.8 MB
        sdk(srv, "x").chat.completions.create(model="model", messages=MSGS, max_tokens=2)
        assert calls == [1]


def test_max_request_bytes_is_a_setting_with_one_name() -> None:
    from tailored.serve.settings import ServeSettings, parse_settings

    assert ServeSettings().max_request_bytes > 1_000_000
    with pytest.raises(ConfigError, match="--max-request-bytes"):
        parse_settings(max_request_bytes=0)


# --- 3. broken run folders ---------------------------------------------------------------------------


def _break(runs: Path, lora_run: Path) -> dict[str, str]:
    """Run folders damaged in every way we know; name -> words the reason must hold."""
    for name in ("good", "a-corrupt-manifest", "other-version", "garbage-safetensors", "bad-adapter-config",
                 "no-adapter-dir", "pickle-only", "wrong-shapes"):
        shutil.copytree(lora_run, runs / name)
    (runs / "a-corrupt-manifest" / "manifest.json").write_text("{not json")
    manifest = json.loads((lora_run / "manifest.json").read_text())
    (runs / "other-version" / "manifest.json").write_text(json.dumps({**manifest, "tailored_manifest": 99}))
    (runs / "garbage-safetensors" / "adapter" / "adapter_model.safetensors").write_bytes(random.randbytes(4096))
    (runs / "bad-adapter-config" / "adapter" / "adapter_config.json").write_text("{")
    shutil.rmtree(runs / "no-adapter-dir" / "adapter")
    from safetensors.torch import load_file, save_file

    weights = runs / "pickle-only" / "adapter" / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), weights.with_suffix(".bin"))
    weights.unlink()
    shaped = runs / "wrong-shapes" / "adapter" / "adapter_model.safetensors"
    save_file({k: v.t().contiguous() for k, v in load_file(str(shaped)).items()}, str(shaped))
    return {"a-corrupt-manifest": "not valid JSON", "other-version": "manifest version 99",
            "garbage-safetensors": "safetensors", "bad-adapter-config": "adapter_config.json",
            "no-adapter-dir": "no final weights", "pickle-only": "safetensors"}


@pytest.fixture(scope="module")
def broken(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    runs = tmp_path_factory.mktemp("broken-runs")
    return runs, _break(runs, lora_run)


def test_broken_run_folders_do_not_stop_the_server(broken: tuple[Path, dict[str, str]], lora_run: Path) -> None:
    runs, reasons = broken
    # no --base: it comes from the first run found, and the first (alphabetically) is the corrupt one
    with start(runs=[str(runs)], api_key=KEY, max_tokens=16) as srv:
        client = sdk(srv)
        listed = {m.model_extra.get("run") for m in client.models.list().data}
        assert listed == {None, "good", "wrong-shapes"}  # wrong-shapes' files read fine until it is loaded
        for name, words in reasons.items():
            with pytest.raises(openai.NotFoundError) as err:
                client.models.retrieve(name)
            assert err.value.code == "model_not_found" and words in err.value.message and name in err.value.message, name
            assert str(runs) not in err.value.message  # the run's name, not the server's paths
            with pytest.raises(openai.NotFoundError) as err:
                client.chat.completions.create(model=name, messages=MSGS, max_tokens=2)
            assert words in err.value.message, name
        assert client.chat.completions.create(model="good", messages=MSGS, max_tokens=2).choices
        stats = httpx.get(srv.url + "/stats", headers=AUTH).json()
        assert {b["run"] for b in stats["unavailable"]} == set(reasons)
        # a run that breaks while the server is up: /v1/models keeps answering
        shutil.copytree(lora_run, runs / "late")
        (runs / "late" / "adapter" / "adapter_config.json").write_text("[1, 2")
        assert {m.model_extra.get("run") for m in client.models.list().data} == listed
        shutil.rmtree(runs / "late")


def test_startup_output_lists_the_runs_not_served(broken: tuple[Path, dict[str, str]], tiny_model_dir: Path) -> None:
    from tailored.serve.server import build, startup_lines

    runs, reasons = broken
    built = build(base=str(tiny_model_dir), runs=[str(runs)], jobs=False)
    try:
        text = "\n".join(startup_lines(built))
    finally:
        built.close()
    assert "(adapter, good)" in text and f"not serving {len(reasons)} run folder(s)" in text
    for name, words in reasons.items():
        line = next(line for line in text.splitlines() if f"{name}:" in line)
        assert words in line, line


def test_an_adapter_that_fails_to_load_fails_only_its_own_request(broken: tuple[Path, dict[str, str]],
                                                                   tiny_model_dir: Path) -> None:
    runs, _ = broken
    with start(base=str(tiny_model_dir), runs=[str(runs)], batch_wait_ms=500, max_tokens=16) as srv:
        client = sdk(srv, "x")

        def ask(model: str) -> str:
            return client.chat.completions.create(model=model, messages=MSGS, max_tokens=6, temperature=0).choices[0].message.content

        expected = ask("model")
        before = srv.built.engine.stats["batches"]
        bad, base, good = concurrently(lambda: ask("wrong-shapes"), lambda: ask("model"), lambda: ask("good"))
        assert srv.built.engine.stats["batches"] - before == 1
        assert base == expected and isinstance(good, str)
        assert isinstance(bad, openai.InternalServerError) and bad.code == "model_unavailable"
        assert "wrong-shapes" in bad.message and "cannot be loaded" in bad.message and "do not fit" in bad.message
        assert bad.response.headers["x-request-id"] in bad.message and str(runs) not in bad.message
        # now known broken: not listed any more, and asking for it says why
        assert "wrong-shapes" not in {m.model_extra.get("run") for m in client.models.list().data}
        with pytest.raises(openai.NotFoundError, match="cannot be loaded"):
            client.models.retrieve("wrong-shapes")


# --- 4. keyless servers answer local clients only ------------------------------------------------------


def test_keyless_server_refuses_other_hosts_and_origins(tiny_model_dir: Path) -> None:
    with start(base=str(tiny_model_dir), allowed_origins=["http://app.example:3000"]) as srv:
        port = srv.url.split(":")[2].split("/")[0]
        url = srv.url + "/models"

        def get(**headers: str) -> httpx.Response:
            return httpx.get(url, headers=headers, timeout=30)

        for host in ("evil.example", f"evil.example:{port}", "127.evil.example", "localhost.evil.example",
                     "127.0.0.1.evil.example"):
            r = get(host=host)
            assert r.status_code == 403 and r.json()["error"]["code"] == "not_local", host
        for origin in ("http://evil.example", f"http://evil.example:{port}", "http://127.evil.example", "null"):
            r = get(origin=origin)
            assert r.status_code == 403 and r.json()["error"]["code"] == "not_local", origin
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost", "127.0.0.2"):
            assert get(host=host).status_code == 200, host
        for origin in (f"http://localhost:{port}", "http://127.0.0.1:5173", "http://[::1]:8080"):
            r = get(origin=origin)
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers, origin
        r = get(origin="http://app.example:3000")
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example:3000"
        preflight = httpx.options(srv.url + "/chat/completions", timeout=30, headers={
            "origin": "http://app.example:3000", "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,authorization"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "http://app.example:3000"
        assert get(host="evil.example", origin="http://app.example:3000").status_code == 403  # Host is still checked


def test_allowed_origins_is_one_setting_and_a_comma_list_on_the_command_line() -> None:
    from tailored.serve.settings import parse_settings

    assert parse_settings(allowed_origins="http://a.example, http://b.example:8080").allowed_origins == [
        "http://a.example", "http://b.example:8080"]
    with pytest.raises(ConfigError, match="--allowed-origins"):
        parse_settings(allowed_origins=["app.example"])  # an origin is scheme://host[:port]


# --- 5. an empty key is refused ------------------------------------------------------------------------


def test_an_empty_key_is_refused_at_startup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    from tailored.serve.keys import load_keys

    monkeypatch.delenv("TAILORED_API_KEY", raising=False)
    monkeypatch.delenv("TAILORED_API_KEYS", raising=False)
    for key in ("", "  "):
        with pytest.raises(ConfigError, match="--api-key"):
            load_keys(api_key=key)
    with pytest.raises(ConfigError, match="--api-key"):
        start(base=str(tiny_model_dir), api_key="")
    monkeypatch.setenv("TAILORED_API_KEY", "")
    with pytest.raises(ConfigError, match="TAILORED_API_KEY"):
        load_keys()
    monkeypatch.delenv("TAILORED_API_KEY")
    monkeypatch.setenv("TAILORED_API_KEYS", " =team-a")
    with pytest.raises(ConfigError, match="TAILORED_API_KEYS"):
        load_keys()
    monkeypatch.delenv("TAILORED_API_KEYS")
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text("keys:\n  - {key: sk-a, project: a}\n  - {key: '', project: b}\n")
    with pytest.raises(ConfigError, match=r"keys\[2\]"):
        load_keys(api_keys=str(keys_file))


# --- 6. /health is liveness only; the counters need a key ----------------------------------------------


def test_health_is_open_and_minimal_stats_need_a_key(tiny_model_dir: Path) -> None:
    with start(base=str(tiny_model_dir), api_key=KEY) as srv:
        root = srv.url.removesuffix("/v1")
        health = httpx.get(root + "/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert httpx.get(srv.url + "/stats").status_code == 401
        assert httpx.get(root + "/health", params={"stats": "1"}).json() == {"status": "ok"}
        stats = httpx.get(srv.url + "/stats", headers=AUTH)
        assert stats.status_code == 200
        body = stats.json()
        assert {"batches", "rows", "tokens", "active_rows", "queued", "cancelled_rows", "failed_rows"} <= set(body["engine"])


# --- 7. a 500 names the request id, never the exception ------------------------------------------------


def test_internal_errors_are_logged_under_the_request_id_and_not_returned(tiny_model_dir: Path,
                                                                          caplog: pytest.LogCaptureFixture,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with start(base=str(tiny_model_dir), api_key=KEY, max_tokens=16) as srv:
        registry = srv.built.registry

        def broken_resolve(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret detail /srv/private/path")

        with caplog.at_level(logging.ERROR, logger="tailored.serve"):
            monkeypatch.setattr(registry, "resolve", broken_resolve)
            r = httpx.post(srv.url + "/chat/completions", headers=AUTH, timeout=60,
                           json={"model": "model", "messages": MSGS})
            monkeypatch.undo()
        rid = r.headers["x-request-id"]
        assert r.status_code == 500 and rid.startswith("req_")
        error = r.json()["error"]
        assert "secret" not in r.text and rid in error["message"] and error["type"] == "server_error"
        logged = [rec for rec in caplog.records if rid in rec.getMessage()]
        assert logged and "secret detail" in "".join(str(rec.exc_info[1]) for rec in logged if rec.exc_info)

        # a failure inside generation: the same, for JSON answers and for streams
        model = srv.built.engine.base_model

        def broken_forward(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret tensor detail")

        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="tailored.serve"):
            monkeypatch.setattr(model, "forward", broken_forward)
            with pytest.raises(openai.InternalServerError) as err:
                sdk(srv).chat.completions.create(model="model", messages=MSGS, max_tokens=4)
            stream = httpx.post(srv.url + "/chat/completions", headers=AUTH, timeout=60,
                                json={"model": "model", "messages": MSGS, "max_tokens": 4, "stream": True})
            monkeypatch.undo()
        assert "secret" not in err.value.message and err.value.response.headers["x-request-id"] in err.value.message
        events = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: {")]
        assert "secret" not in stream.text and stream.headers["x-request-id"] in events[-1]["error"]["message"]
        assert any("secret tensor detail" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)
        assert sdk(srv).chat.completions.create(model="model", messages=MSGS, max_tokens=2).choices  # still serving


# --- 8. a client that leaves frees its rows ---------------------------------------------------------------


def _stats(srv: Any) -> dict[str, Any]:
    return httpx.get(srv.url + "/stats", headers=AUTH, timeout=30).json()["engine"]


def _wait_freed(srv: Any, cancelled: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        stats = _stats(srv)
        if stats["active_rows"] == 0 and stats["cancelled_rows"] >= cancelled or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def _slow_down(srv: Any, monkeypatch: pytest.MonkeyPatch, seconds: float = 0.01) -> None:
    """Each forward pass of the served (real) model takes ``seconds`` longer, so a generation lasts a while."""
    model = srv.built.engine.base_model
    real = model.forward

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow)


def test_a_client_that_disconnects_frees_its_rows(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start(base=str(tiny_model_dir), api_key=KEY, max_tokens=450, batch_wait_ms=0) as srv:
        _slow_down(srv, monkeypatch)  # 450 tokens would take 4.5 s or more
        body = {"model": "model", "messages": MSGS, "max_tokens": 450, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", srv.url + "/chat/completions", json=body, headers=AUTH, timeout=60) as response:
            lines = response.iter_lines()
            for _ in range(6):  # a few chunks, then hang up mid-stream
                next(lines)
        stats = _wait_freed(srv, 1)
        assert stats["active_rows"] == 0 and stats["cancelled_rows"] == 1
        assert stats["tokens"] < 300  # stopped, not generated to the end
        # a non-streaming client that gives up (a timeout) also frees its row
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.url + "/chat/completions", headers=AUTH, timeout=1.0,
                       json={**body, "stream": False})
        stats = _wait_freed(srv, 2)
        assert stats["active_rows"] == 0 and stats["cancelled_rows"] == 2
        assert stats["tokens"] < 600


class FakeVllmEngine:
    """Stands in for ``vllm.AsyncLLMEngine`` / v1 ``AsyncLLM``: ``generate`` yields one token per 10 ms,
    ``abort(request_id)`` stops it (what vLLM's engine does)."""

    def __init__(self) -> None:
        self.aborted: list[str] = []
        self.running: set[str] = set()
        self.started: list[str] = []

    async def generate(self, prompt: Any, params: Any, request_id: str, lora_request: Any = None) -> Any:
        self.running.add(request_id)
        self.started.append(request_id)
        try:
            for i in range(params.max_tokens):
                await asyncio.sleep(0.01)
                if request_id in self.aborted:
                    return
                done = i + 1 == params.max_tokens
                yield SimpleNamespace(outputs=[SimpleNamespace(index=0, text="ab" * (i + 1), token_ids=[5] * (i + 1),
                                                               finish_reason="length" if done else None)], finished=done)
        finally:
            self.running.discard(request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def test_vllm_engine_aborts_the_request_of_a_client_that_leaves(tiny_model_dir: Path) -> None:
    from tailored.models.load import content_hash
    from tailored.serve.app import create_app
    from tailored.serve.registry import Registry
    from tailored.serve.server import Built, Running
    from tailored.serve.settings import parse_settings
    from tailored.serve.vllm_engine import VllmEngine

    settings = parse_settings(base=str(tiny_model_dir), port=0, max_tokens=300, jobs=False)
    registry = Registry(tiny_model_dir, "model", content_hash(tiny_model_dir), [])
    api = SimpleNamespace(SamplingParams=lambda **kw: SimpleNamespace(**kw),
                          TokensPrompt=lambda **kw: kw, LoRARequest=lambda *a: a)
    fake = FakeVllmEngine()
    engine = VllmEngine(registry, settings, engine=fake, api=api, context=512)
    with Running(Built(settings, registry, engine, create_app(engine, registry))) as srv:
        client = sdk(srv, "x")
        done = client.chat.completions.create(model="model", messages=MSGS, max_tokens=3)
        assert done.choices[0].message.content == "ababab" and done.choices[0].finish_reason == "length"
        assert fake.aborted == []
        body = {"model": "model", "messages": MSGS, "max_tokens": 300, "stream": True}
        with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=30) as response:
            rid = response.headers["x-request-id"]
            lines = response.iter_lines()
            for _ in range(4):
                next(lines)
        deadline = time.monotonic() + 10
        while (rid not in fake.aborted or fake.running) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake.aborted == [rid] and not fake.running
        assert fake.started[-1] == rid  # vLLM's request id is the server's x-request-id


# --- 9. pickled adapter weights are never handed to peft -----------------------------------------------


def test_adapter_folder_with_only_a_bin_is_refused_before_peft(lora_run: Path, tmp_path: Path,
                                                               tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peft
    from safetensors.torch import load_file

    from tailored.methods import get_method
    from tailored.methods.runs import load_run
    from tailored.models.load import load_model
    from tailored.engine.lora import LoraBank

    run = tmp_path / "pickled"
    shutil.copytree(lora_run, run)
    weights = run / "adapter" / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), run / "adapter" / "adapter_model.bin")
    weights.unlink()
    opened: list[str] = []
    real = peft.PeftModel.from_pretrained
    monkeypatch.setattr(peft.PeftModel, "from_pretrained",
                        classmethod(lambda cls, model, folder, **kw: opened.append(folder) or real(model, folder, **kw)))
    with pytest.raises(CheckpointError, match=r"adapter_model\.bin.*safetensors"):
        get_method("lora").load(load_model(tiny_model_dir), run / "adapter")
    with pytest.raises(CheckpointError, match=r"safetensors"):
        load_run(run)
    with pytest.raises(CheckpointError, match=r"safetensors"):
        LoraBank(load_model(tiny_model_dir)).load("x", run / "adapter")
    assert opened == []  # peft never saw the folder


def test_a_server_started_in_process_leaves_the_hosts_logging_alone(tiny_model_dir: Path) -> None:
    """`start()` runs inside someone's process (a notebook, an app, pytest): uvicorn's default log config would
    close every logging handler the host had (dictConfig clears them) -- it once closed pytest's own capture file."""

    class Kept(logging.Handler):
        closed = False

        def emit(self, record: logging.LogRecord) -> None:
            pass

        def close(self) -> None:
            self.closed = True
            super().close()

    kept = Kept()
    logging.getLogger().addHandler(kept)
    try:
        with start(base=str(tiny_model_dir), max_tokens=4) as srv:
            assert httpx.get(srv.url + "/models").status_code in (200, 401)
        assert not kept.closed and kept in logging.getLogger().handlers
        assert logging.getLogger("uvicorn.error").getEffectiveLevel() == logging.WARNING  # still quiet
    finally:
        logging.getLogger().removeHandler(kept)
