"""The OpenAI-compatible server, end to end: a real uvicorn on 127.0.0.1, the official openai SDK (strict).

Two tiny LoRA runs trained on different answers (so they differ from each other and from the base), a
run on another base (served standalone with its own chat template), and the base itself.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import threading
from pathlib import Path

import httpx
import openai
import pytest

import tailored
from tailored.errors import ConfigError
from tailored.serve.server import start
from tailored.testing.tiny import WORDS

KEY = "test-key"
MSGS = [{"role": "user", "content": "have each way from"}]


def write_data(path: Path, answer: str, n: int = 32) -> Path:
    rng = random.Random(0)
    rows = [{"messages": [{"role": "user", "content": " ".join(rng.choice(WORDS[:60]) for _ in range(rng.randint(2, 6)))},
                          {"role": "assistant", "content": answer}]} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_run(model: Path, out: Path, answer: str, steps: int = 12, method: str = "lora") -> Path:
    data = write_data(out.parent / f"{out.name}.jsonl", answer)
    tailored.train(data=str(data), model=str(model), method=method, max_steps=steps, learning_rate_multiplier=300,
                   batch_size=8, max_seq_length=64, threads=1, red_flags="off", output=str(out))
    return out


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tiny_zephyr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    data_dir = tmp_path_factory.mktemp("data")
    train_run(tiny_model_dir, data_dir / "run-a", "billing refund")
    train_run(tiny_model_dir, data_dir / "run-b", "json crash bug")
    train_run(tiny_zephyr_dir, data_dir / "zephyr-run", "login password", steps=4)
    train_run(tiny_model_dir, data_dir / "full-run", "shipping label", steps=2, method="full")
    train_run(tiny_model_dir, data_dir / "prefix-run", "order delivery", steps=2, method="prefix")
    for name in ("run-a", "run-b", "zephyr-run", "full-run", "prefix-run"):
        shutil.copytree(data_dir / name, root / name)
    return root


@pytest.fixture(scope="module")
def server(runs: Path, tiny_model_dir: Path):
    srv = start(base=str(tiny_model_dir), runs=[str(runs)], api_key=KEY, batch_wait_ms=200, max_tokens=64)
    yield srv
    srv.stop()


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, _strict_response_validation=True)


def ids(client: openai.OpenAI) -> dict[str, str]:
    """run name (or 'base') -> model id."""
    out = {}
    for m in client.models.list().data:
        out[m.model_extra.get("run") or "base"] = m.id
    return out


def test_models_list_names_base_and_fine_tunes(client: openai.OpenAI) -> None:
    models = ids(client)
    assert set(models) == {"base", "run-a", "run-b", "zephyr-run", "full-run", "prefix-run"}
    assert models["base"] == "model"
    assert re.fullmatch(r"ft:model:run-a:[0-9a-f]{8}", models["run-a"])
    assert models["run-a"] != models["run-b"]
    assert all("/" not in i for i in models.values())
    assert client.models.retrieve(models["run-a"]).id == models["run-a"]
    assert client.models.retrieve("run-b").id == models["run-b"]  # the run folder name is an alias
    kinds = {m.id: m.model_extra["kind"] for m in client.models.list().data}
    assert kinds[models["run-a"]] == "adapter" and kinds[models["run-b"]] == "adapter"
    assert kinds[models["zephyr-run"]] == "standalone" and kinds[models["full-run"]] == "standalone"


def test_greedy_answers_equal_local_chat(client: openai.OpenAI, runs: Path, tiny_model_dir: Path) -> None:
    models = ids(client)
    answers = {}
    for name, target in [("base", tiny_model_dir), ("run-a", runs / "run-a"), ("run-b", runs / "run-b"),
                         ("zephyr-run", runs / "zephyr-run"), ("full-run", runs / "full-run")]:
        out = client.chat.completions.create(model=models[name], messages=MSGS, max_tokens=12, temperature=0)
        expected = tailored.load(target).chat(MSGS, max_new_tokens=12)
        assert out.choices[0].message.content == expected, name
        assert out.model == models[name]
        assert out.usage.completion_tokens <= 12 and out.usage.prompt_tokens > 0
        answers[name] = expected
    assert len({answers["base"], answers["run-a"], answers["run-b"]}) == 3  # the adapters really are applied


def test_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    model = ids(client)["run-b"]
    full = client.chat.completions.create(model=model, messages=MSGS, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model=model, messages=MSGS, max_tokens=10, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens
    assert len({c.id for c in chunks}) == 1
    no_usage = list(client.chat.completions.create(model=model, messages=MSGS, max_tokens=4, temperature=0, stream=True))
    assert all(c.usage is None and c.choices for c in no_usage)


def test_concurrent_requests_for_different_adapters_share_a_batch(client: openai.OpenAI, server) -> None:
    models = ids(client)
    names = ["base", "run-a", "run-b"] * 2
    expected = {n: client.chat.completions.create(model=models[n], messages=MSGS, max_tokens=8, temperature=0)
                .choices[0].message.content for n in set(names)}
    before = dict(server.built.engine.stats)
    results: dict[int, str] = {}
    barrier = threading.Barrier(len(names))

    def call(i: int, name: str) -> None:
        barrier.wait()
        if i % 2:
            stream = client.chat.completions.create(model=models[name], messages=MSGS, max_tokens=8, temperature=0, stream=True)
            results[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            results[i] = client.chat.completions.create(model=models[name], messages=MSGS, max_tokens=8,
                                                        temperature=0).choices[0].message.content

    threads = [threading.Thread(target=call, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[i] for i in range(len(names))] == [expected[n] for n in names]
    stats = server.built.engine.stats
    assert stats["mixed_batches"] > before["mixed_batches"]
    assert stats["batches"] - before["batches"] < len(names)  # batched, not one by one


def test_n_seed_stop_and_length(client: openai.OpenAI) -> None:
    model = ids(client)["base"]
    kwargs = {"model": model, "messages": MSGS, "max_tokens": 8, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    first = client.chat.completions.create(n=3, **kwargs)
    again = client.chat.completions.create(n=3, **kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1  # different rows sample differently
    greedy = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=12, temperature=0)
    assert greedy.choices[0].finish_reason == "length" and greedy.usage.completion_tokens == 12
    text = greedy.choices[0].message.content
    stop = text[4:7]
    cut = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=12,
                                         temperature=0, stop=[stop, "never-seen"])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_auth_is_required(server) -> None:
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=server.url, api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.models.list()
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    assert httpx.get(server.url + "/models").status_code == 401  # no header at all


def test_errors_use_the_openai_envelope(client: openai.OpenAI, server) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="ft:model:nope:00000000", messages=MSGS)
    assert err.value.code == "model_not_found" and "nope" in err.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="model", messages=MSGS, temperature=5)
    assert err.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="model", messages=[])
    assert err.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="model", messages=MSGS, max_tokens=10_000)
    assert err.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="model", messages=MSGS, tools=[{"type": "function", "function": {"name": "f"}}])
    assert "tools" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:  # prefix tuning needs its own decoder: refused, clearly
        client.chat.completions.create(model="prefix-run", messages=MSGS)
    assert err.value.code == "model_not_supported" and "tailored chat" in err.value.message
    raw = httpx.post(server.url + "/chat/completions", content=b"{not json", headers={"authorization": f"Bearer {KEY}"})
    assert raw.status_code == 400 and set(raw.json()["error"]) == {"message", "type", "param", "code"}
    assert raw.headers["x-request-id"].startswith("req_")


def test_bad_bodies_answer_400_naming_the_field(server) -> None:
    """Bodies the SDK would not send (curl, hand-written clients): same status, message and param every time."""
    auth = {"authorization": f"Bearer {KEY}"}

    def post(body: bytes | dict, content_type: str | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {**auth, **({"content-type": content_type} if content_type else {})}
        return httpx.post(server.url + "/chat/completions", content=content, headers=headers, timeout=60)

    def error(response: httpx.Response) -> tuple[int, str, str | None, str, str | None]:
        e = response.json()["error"]
        return response.status_code, e["message"], e["param"], e["type"], e["code"]

    not_json = "the request body is not valid JSON: "
    assert error(post(b"{not json")) == (
        400, not_json + "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", None,
        "invalid_request_error", None)
    assert error(post(b"")) == (400, not_json + "Expecting value: line 1 column 1 (char 0)", None, "invalid_request_error", None)
    assert error(post(b'{"model": "\xff"}'))[:3] == (
        400, not_json + "'utf-8' codec can't decode byte 0xff in position 11: invalid start byte", None)
    for body in (b"[1, 2]", b"null", b'"model"', b"3"):  # JSON, but not an object
        assert error(post(body))[:3] == (400, "Input should be a valid dictionary or instance of ChatCompletionRequest", None)
    assert error(post({"model": 3})) == (400, "model: Input should be a valid string", "model", "invalid_request_error", None)
    assert error(post({"model": "model"}))[:3] == (400, "messages: Field required", "messages")
    assert error(post({"messages": MSGS}))[:3] == (400, "model: Field required", "model")
    assert error(post({"model": "model", "messages": MSGS, "temperature": "hot"}))[:3] == (
        400, "temperature: Input should be a valid number, unable to parse string as a number", "temperature")
    assert error(post({"model": "model", "messages": [{"role": "robot", "content": "x"}]}))[:3] == (
        400, "messages.0.role: Input should be 'developer', 'system', 'user', 'assistant', 'tool' or 'function'",
        "messages.0.role")
    assert error(post({"model": "model", "messages": MSGS, "stop": ["a", "b", "c", "d", "e"]}))[:3] == (
        400, "stop: Value error, at most 4 stop sequences", "stop")
    assert error(post({"model": "model", "messages": MSGS, "presence_penalty": 1}))[:3] == (
        400, "Value error, presence_penalty is not supported by this server (leave it unset or 0)", None)
    # unknown fields are ignored; the body is JSON whatever the content-type says (`curl -d` sends form-urlencoded)
    ok = {"model": "model", "messages": MSGS, "max_tokens": 1, "metadata": {"a": "b"}, "frobnicate": 1}
    for content_type in (None, "application/json", "application/x-www-form-urlencoded", "text/plain"):
        answer = post(ok, content_type)
        assert answer.status_code == 200 and answer.json()["object"] == "chat.completion", content_type
    assert error(post({"model": 3}, "application/x-www-form-urlencoded"))[:3] == (
        400, "model: Input should be a valid string", "model")


def test_queue_full_answers_429(tiny_model_dir: Path) -> None:
    with start(base=str(tiny_model_dir), queue_size=1, max_batch=1, batch_wait_ms=0, max_tokens=400) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
        outcomes: list[str] = []
        barrier = threading.Barrier(6)

        def call() -> None:
            barrier.wait()
            try:
                client.chat.completions.create(model="model", messages=MSGS, max_tokens=400, temperature=0)
                outcomes.append("ok")
            except openai.RateLimitError as exc:
                assert exc.code == "queue_full"
                outcomes.append("429")

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert "429" in outcomes and "ok" in outcomes and len(outcomes) == 6


def test_new_run_folder_is_served_without_restart(client: openai.OpenAI, runs: Path) -> None:
    shutil.copytree(runs / "run-a", runs / "late-run")
    try:
        out = client.chat.completions.create(model="late-run", messages=MSGS, max_tokens=6, temperature=0)
        assert out.model.startswith("ft:model:late-run:")
        assert "late-run" in ids(client)
    finally:
        shutil.rmtree(runs / "late-run")
    assert "late-run" not in ids(client)


def test_cli_chat_url_matches_local(server, runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tailored.cli.main import main

    assert main(["chat", "--url", server.url, "--model", "run-a", "--api-key", KEY, "--prompt", MSGS[0]["content"],
                 "--max-new-tokens", "10"]) == 0
    printed = capsys.readouterr().out
    assert printed == tailored.load(runs / "run-a").chat(MSGS, max_new_tokens=10) + "\n"


def test_non_loopback_host_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from tailored.serve.server import build

    monkeypatch.delenv("TAILORED_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="API key"):
        build(host="0.0.0.0")


@pytest.mark.slow  # a second process
def test_tailored_serve_command_runs_a_server(tiny_model_dir: Path, runs: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from tailored.serve.server import free_port

    port = free_port()
    env = dict(os.environ, TAILORED_API_KEY=KEY, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tailored.cli.main", "serve", "--base", str(tiny_model_dir),
                             "--runs", str(runs / "run-a"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        deadline = time.time() + 90
        while True:
            try:
                listed = [m.id for m in client.models.list().data]
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.time() < deadline, "tailored serve did not start"
                time.sleep(0.3)
        assert listed[0] == "model" and listed[1].startswith("ft:model:run-a:")
        out = client.chat.completions.create(model="run-a", messages=MSGS, max_tokens=6, temperature=0)
        assert out.choices[0].message.content == tailored.load(runs / "run-a").chat(MSGS, max_new_tokens=6)
    finally:
        proc.terminate()
        printed = proc.communicate(timeout=30)[0]
    assert f"on http://127.0.0.1:{port}/v1" in printed and "(adapter, run-a)" in printed
