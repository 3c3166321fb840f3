"""The traffic log: off by default (nothing written), opt-in logging, redaction, retention, feedback, tenancy.

Real uvicorn servers on 127.0.0.1 with a tiny model, the official ``openai`` SDK (strict) and raw httpx.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import openai
import pytest

import tailored
from tailored.serve.server import start
from tailored.serve.traffic import TrafficLog, redact_pii
from tailored.testing.tiny import WORDS

MARK = "zebracrossing-marker-7731"  # a prompt text that must never reach the disk when logging is off


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("traffic") / "run-t"
    rng = random.Random(0)
    data = out.parent / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": " ".join(rng.choice(WORDS[:60]) for _ in range(4))},
        {"role": "assistant", "content": "billing refund"}]}) + "\n" for _ in range(16)))
    tailored.train(data=str(data), model=str(tiny_model_dir), method="lora", max_steps=2, batch_size=8,
                   max_seq_length=64, threads=1, red_flags="off", output=str(out))
    return out


def sdk(srv, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0, _strict_response_validation=True)


def test_logging_is_off_by_default_and_nothing_is_written(run: Path, tiny_model_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILORED_HOME", str(tmp_path / "home"))
    with start(base=str(tiny_model_dir), runs=[str(run)], api_key="k", max_tokens=8) as srv:
        client = sdk(srv, "k")
        client.chat.completions.create(model="run-t", messages=[{"role": "user", "content": MARK}], max_tokens=4)
        list(client.chat.completions.create(model="run-t", messages=[{"role": "user", "content": MARK}], max_tokens=4,
                                            stream=True))
        answer = httpx.post(f"{srv.url}/traffic/chatcmpl-x/feedback", json={"rating": "good"},
                            headers={"authorization": "Bearer k"})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "traffic_logging_off"
    written = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert written, "the jobs service's store is there (so the scan below looks at real files)"
    assert not [p for p in written if MARK.encode() in p.read_bytes()]
    import sqlite3

    db = sqlite3.connect(str(tmp_path / "home" / "service" / "jobs.sqlite"))
    assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'traffic'").fetchall()


def test_logged_requests_feedback_redaction_and_tenancy(run: Path, tiny_model_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TAILORED_HOME", str(tmp_path / "home"))
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - {key: ka, project: a}\n  - {key: kb, project: b}\n  - {key: kadmin, project: ops, admin: true}\n")
    with start(base=str(tiny_model_dir), runs=[str(run)], api_keys=str(keys), max_tokens=8, jobs=False,
               log_requests=True, log_redact="pii") as srv:
        a, b = sdk(srv, "ka"), sdk(srv, "kb")
        done = a.chat.completions.create(model="run-t", messages=[{"role": "user", "content": "mail me at jo@example.com"}],
                                         max_tokens=4, temperature=0)
        chunks = list(b.chat.completions.create(model="run-t", messages=[{"role": "user", "content": "hello there"}],
                                                max_tokens=4, temperature=0, stream=True))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        def call(method: str, path: str, key: str, **kw):
            return httpx.request(method, f"{srv.url}{path}", headers={"authorization": f"Bearer {key}"}, **kw)

        mine = call("GET", "/traffic", "ka").json()["data"]
        assert [r["id"] for r in mine] == [done.id]  # the completion's own id; b's request is not there
        row = mine[0]
        assert row["messages"] == [{"role": "user", "content": "mail me at [email]"}]
        assert row["answer"] == done.choices[0].message.content and row["run"] == "run-t"
        assert row["usage"]["completion_tokens"] == done.usage.completion_tokens and row["latency_ms"] > 0
        assert row["finish_reason"] == done.choices[0].finish_reason and row["project"] == "a"
        theirs = call("GET", "/traffic", "kb").json()["data"]
        assert [r["id"] for r in theirs] == [chunks[0].id] and theirs[0]["answer"] == streamed
        # another project's request: 404 for reading and for rating; an admin sees both
        assert call("GET", f"/traffic/{done.id}", "kb").status_code == 404
        assert call("POST", f"/traffic/{done.id}/feedback", "kb", json={"rating": "bad"}).status_code == 404
        assert len(call("GET", "/traffic", "kadmin").json()["data"]) == 2
        rated = call("POST", f"/traffic/{done.id}/feedback", "ka", json={"rating": "bad", "correction": "card_arrival"})
        assert rated.status_code == 200 and rated.json()["feedback"] == "bad" and rated.json()["correction"] == "card_arrival"
        bad = call("POST", f"/traffic/{done.id}/feedback", "ka", json={"rating": "meh"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
        for path in ("/traffic", f"/traffic/{done.id}", "/drift?model=run-t"):  # auth on every route
            assert httpx.get(f"{srv.url}{path}").status_code == 401
        assert call("GET", "/drift?model=run-t", "ka").json()["data"] == []  # no check yet
        (run / "drift").mkdir(exist_ok=True)  # what `tailored drift` appends after each check
        (run / "drift" / "history.jsonl").write_text(json.dumps({"checked_at": "2026-12-02T08:00:00", "verdict": "drift"}) + "\n")
        points = call("GET", "/drift?model=run-t", "ka").json()
        assert points["data"][0]["verdict"] == "drift" and points["model"].startswith("ft:")
        (run / "drift" / "history.jsonl").unlink()
        assert call("GET", "/drift?model=nope", "ka").status_code == 404
    # `tailored drift RUN` reads the run's rows from the server's store: too few to judge, but the corrected one exports
    from tailored.cli.main import main

    assert main(["drift", str(run), "--project", "a"]) == 1
    assert "1 traffic input(s): too few" in capsys.readouterr().err
    assert main(["drift", str(run), "--export", str(tmp_path / "new.jsonl")]) == 0
    exported = [json.loads(line) for line in (tmp_path / "new.jsonl").read_text().splitlines()]
    assert exported == [{"messages": [{"role": "user", "content": "mail me at [email]"},
                                      {"role": "assistant", "content": "card_arrival"}]}]


def test_retention_projects_and_redaction_units(tmp_path: Path) -> None:
    log = TrafficLog(tmp_path / "s.sqlite", retention_days=1, projects=["a"])
    common = {"model": "m", "run": None, "messages": [{"role": "user", "content": "hi"}], "answer": "x",
              "finish_reason": "stop", "latency_ms": 1.0, "usage": {}}
    log.record(id="c1", project="a", **common)
    log.record(id="c2", project="b", **common)  # b is not a logged project
    assert [r["id"] for r in log.rows(None)] == ["c1"]
    with log.store.transaction() as db:
        db.execute("UPDATE traffic SET created_at = ?", (time.time() - 2 * 86400,))
    assert log.purge() == 1 and log.rows(None) == []
    assert redact_pii("call +44 20 7946 0958 or pay 4111 1111 1111 1111, a@b.io") == "call [phone] or pay [card], [email]"
