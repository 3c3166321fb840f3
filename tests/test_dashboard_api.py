"""The dashboard's server side on the tiny model: login and cookie, CSRF, tenancy on every page and download,
the keyless (local-only) mode, the playground's two sides (each the model that answered, base and fine-tune
differing as they do when loaded locally), feedback on logged answers, the drift view's data, the arena's
leaderboard maths, and votes → a preference file a dpo job takes.

One server (logging traffic) and one tiny job for the module; one xdist group, so `make test` builds them once."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tailored.dashboard.arena import bradley_terry, leaderboard, preference_rows
from tailored.testing.tiny import write_chat_dataset

pytestmark = pytest.mark.xdist_group("dashboard-api")
KEYS = {"a": "sk-dash-a", "b": "sk-dash-b"}
PROMPT = [{"role": "user", "content": "question 5"}]  # a question like those the job trains on


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, home: None):
    from tailored.dashboard import attach
    from tailored.serve.server import Running, build

    keys = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys.write_text(json.dumps({"keys": [{"key": KEYS["a"], "project": "team-a"}, {"key": KEYS["b"], "project": "team-b"}]}))
    srv = Running(attach(build(base=str(tiny_model_dir), api_keys=str(keys), port=0, max_tokens=8,
                                 log_requests=True)))
    yield srv
    srv.stop()


def root(server: Any) -> str:
    return server.url[:-3]


def session(server: Any, who: str = "a") -> tuple[httpx.Client, str]:
    """A logged-in client (cookie) and its CSRF token, as the browser holds them."""
    c = httpx.Client(base_url=root(server), timeout=60)
    r = c.post("/ui/login", data={"key": KEYS[who]})
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = c.get("/")
    assert page.status_code == 200
    return c, re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


@pytest.fixture(scope="module")
def trained(server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One finished job of team A: two steps on the tiny model towards one fixed answer, at a rate that changes its
    greedy answers whatever the thread count (varied answers at a chaotic rate did not, on every machine)."""
    sdk = openai.OpenAI(base_url=server.url, api_key=KEYS["a"], max_retries=0)
    data = tmp_path_factory.mktemp("d") / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                                     {"role": "assistant", "content": "zebra zebra zebra zebra"}]}) + "\n"
                            for i in range(12)))
    file = sdk.files.create(file=data, purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(model="model", training_file=file.id, hyperparameters={"learning_rate_multiplier": 300},
                                      extra_body={"tailored": {"max_steps": 2}})
    deadline = time.monotonic() + 180
    while (job := sdk.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job.status
        time.sleep(0.3)
    assert job.status == "succeeded", job.error
    return {"job": job, "file": file}


def test_login_gives_an_httponly_strict_cookie_and_refuses_a_wrong_key(server: Any) -> None:
    c = httpx.Client(base_url=root(server))
    assert c.get("/").headers["location"] == "/ui/login"  # no session: the login page
    assert c.get("/ui/login").status_code == 200 and c.get("/ui/static/app.js").status_code == 200
    wrong = c.post("/ui/login", data={"key": "sk-nope"})
    assert wrong.headers["location"] == "/ui/login?failed=1" and "set-cookie" not in wrong.headers
    foreign = c.post("/ui/login", data={"key": KEYS["a"]}, headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403  # login CSRF: another site's form cannot log a victim in
    cookie = c.post("/ui/login", data={"key": KEYS["a"]}).headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and KEYS["a"] not in cookie
    assert c.get("/ui/api/runs").status_code == 200
    assert httpx.get(root(server) + "/ui/api/runs").status_code == 401  # the API answers 401 without a session


def test_every_change_needs_the_csrf_token_but_bearer_clients_are_untouched(server: Any, tmp_path: Path) -> None:
    c, csrf = session(server)
    data = write_chat_dataset(tmp_path / "t.jsonl", n=10).read_bytes()
    upload = {"files": {"file": ("t.jsonl", data)}, "data": {"purpose": "fine-tune"}}
    assert c.post("/v1/files", **upload).status_code == 403
    assert c.post("/v1/files", **upload, headers={"x-csrf-token": "guess"}).status_code == 403
    assert c.post("/ui/api/arena/preferences", headers={"x-csrf-token": "guess"}).status_code == 403
    assert httpx.post(root(server) + "/ui/api/arena/preferences").status_code == 403  # no session at all
    assert c.post("/v1/files", **upload, headers={"x-csrf-token": csrf}).json()["status"] == "processed"
    sdk = openai.OpenAI(base_url=server.url, api_key=KEYS["a"], max_retries=0)
    assert sdk.files.create(file=("t.jsonl", data), purpose="fine-tune").status == "processed"
    assert c.post("/ui/logout", headers={"x-csrf-token": csrf}).status_code == 303
    assert c.get("/ui/api/runs").status_code == 401  # the session is gone


def test_another_project_sees_none_of_a_projects_files_jobs_runs_or_downloads(server: Any, trained: dict[str, Any]) -> None:
    a, csrf_a = session(server, "a")
    b, csrf_b = session(server, "b")
    job, file = trained["job"], trained["file"]
    model = job.fine_tuned_model
    inspected = a.get(f"/ui/api/files/{file.id}/inspect").json()
    assert inspected["stats"]["examples"] == 12 and inspected["preview"][0]["trained_tokens"] > 0
    curve = a.get(f"/ui/api/jobs/{job.id}/curve").json()
    assert [p["step"] for p in curve["train"]] == [1, 2] and curve["best_step"] == 2
    assert model in {r["model"] for r in a.get("/ui/api/runs").json()["data"]}
    assert "Red flags" in a.get("/ui/runs/report", params={"model": model}).text
    exported = a.post("/ui/api/runs/export", json={"model": model, "format": "adapter"}, headers={"x-csrf-token": csrf_a})
    assert exported.status_code == 200, exported.text
    download = a.get(exported.json()["download"])
    assert download.status_code == 200 and download.content[:2] == b"PK"  # a zip of the adapter folder
    for path in (f"/ui/api/files/{file.id}/inspect", f"/ui/api/jobs/{job.id}/curve"):
        assert b.get(path).status_code == 404
    assert model not in {r["model"] for r in b.get("/ui/api/runs").json()["data"]}
    assert b.get("/ui/runs/report", params={"model": model}).status_code == 404
    assert b.get("/ui/runs/download", params={"model": model, "format": "adapter"}).status_code == 404
    assert b.post("/ui/api/runs/export", json={"model": model, "format": "adapter"},
                  headers={"x-csrf-token": csrf_b}).status_code == 404


def stream(client: httpx.Client, csrf: str, model: str) -> tuple[str, str, str]:
    """What a playground side does: stream a greedy answer; (the model the chunks name, the id, the text)."""
    body = {"model": model, "messages": PROMPT, "max_tokens": 8, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers={"x-csrf-token": csrf}) as r:
        assert r.status_code == 200
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len({c["model"] for c in chunks}) == 1 and len({c["id"] for c in chunks}) == 1
    return chunks[0]["model"], chunks[0]["id"], text


def test_playground_sides_are_the_models_that_answered_and_answers_take_feedback(
        server: Any, trained: dict[str, Any], tiny_model_dir: Path) -> None:
    import tailored

    a, csrf = session(server, "a")
    b, csrf_b = session(server, "b")
    assert '<meta name="traffic-log" content="1">' in a.get("/").text  # the page offers feedback
    model = trained["job"].fine_tuned_model
    sides = [stream(a, csrf, m) for m in ("model", model)]
    assert [s[0] for s in sides] == ["model", model]
    run = server.built.registry.resolve(model, "team-a").run_dir
    local = [tailored.load(f).chat(PROMPT, max_new_tokens=8) for f in (tiny_model_dir, run)]
    assert [s[2] for s in sides] == local and local[0] != local[1]  # the adapter on its side only, as loaded locally
    tid = sides[1][1]
    rate = f"/v1/traffic/{tid}/feedback"
    assert a.post(rate, json={"rating": "good"}).status_code == 403  # CSRF
    assert b.post(rate, json={"rating": "good"}, headers={"x-csrf-token": csrf_b}).status_code == 404  # tenancy
    assert a.post(rate, json={"rating": "meh"}, headers={"x-csrf-token": csrf}).status_code == 400
    assert a.post(rate, json={"rating": "bad"}, headers={"x-csrf-token": csrf}).json()["feedback"] == "bad"
    logged = a.get(f"/v1/traffic/{tid}").json()
    assert logged["model"] == model and logged["answer"] == local[1] and logged["feedback"] == "bad"


def test_the_drift_view_reads_the_models_checks_over_time_for_its_project_only(server: Any, trained: dict[str, Any]) -> None:
    a, _ = session(server, "a")
    b, _ = session(server, "b")
    model = trained["job"].fine_tuned_model
    assert a.get("/v1/drift", params={"model": model}).json()["data"] == []  # no check yet: the view says so
    drift = server.built.registry.resolve(model, "team-a").run_dir / "drift"
    drift.mkdir(exist_ok=True)  # the lines `tailored drift RUN` appends after each check (tests/test_drift.py runs it)
    checks = [{"checked_at": "2026-12-01T09:00:00", "verdict": "no drift", "n_traffic": 40, "domain classifier": 0.52},
              {"checked_at": "2026-12-02T09:00:00", "verdict": "severe", "n_traffic": 60, "domain classifier": 0.93}]
    (drift / "history.jsonl").write_text("".join(json.dumps(c) + "\n" for c in checks))
    got = a.get("/v1/drift", params={"model": model}).json()
    assert got["model"] == model and [p["verdict"] for p in got["data"]] == ["no drift", "severe"]
    assert got["data"][1]["domain classifier"] == 0.93
    assert b.get("/v1/drift", params={"model": model}).status_code == 404  # another project's model
    assert a.get("/v1/drift", params={"model": "model"}).json()["error"]["code"] == "not_a_fine_tune"


def test_arena_votes_become_a_preference_file_that_a_dpo_job_takes(server: Any, trained: dict[str, Any]) -> None:
    a, csrf = session(server, "a")
    b, csrf_b = session(server, "b")
    model = trained["job"].fine_tuned_model
    battles = 16  # sampled answers of the tiny model can be empty or identical (left out); a DPO job needs 10 pairs
    for i in range(battles):
        battle = a.post("/ui/api/arena/battles", json={"prompt": f"say {i}", "max_tokens": 6, "temperature": 1.0},
                        headers={"x-csrf-token": csrf}).json()
        assert set(battle) == {"id", "messages", "answers"}  # no names before the vote
        assert b.post(f"/ui/api/arena/battles/{battle['id']}/vote", json={"vote": "a"},
                      headers={"x-csrf-token": csrf_b}).status_code == 404  # another project's battle
        voted = a.post(f"/ui/api/arena/battles/{battle['id']}/vote", json={"vote": "a" if i % 3 else "b"},
                       headers={"x-csrf-token": csrf}).json()
        assert set(voted["models"]) == {"model", model}
    again = a.post(f"/ui/api/arena/battles/{battle['id']}/vote", json={"vote": "b"}, headers={"x-csrf-token": csrf})
    assert again.status_code == 400  # one vote per battle
    board = a.get("/ui/api/arena/leaderboard").json()
    assert board["votes"] == battles and {r["model"] for r in board["data"]} == {"model", model}
    assert b.get("/ui/api/arena/leaderboard").json()["votes"] == 0
    saved = a.post("/ui/api/arena/preferences", headers={"x-csrf-token": csrf}).json()
    assert "file" in saved, saved
    file = saved["file"]
    assert file["status"] == "processed", file
    assert saved["pairs"] + saved["left_out_identical"] + saved["left_out_empty"] == battles and saved["pairs"] >= 10, saved
    sdk = openai.OpenAI(base_url=server.url, api_key=KEYS["a"], max_retries=0)
    job = sdk.fine_tuning.jobs.create(model="model", training_file=file["id"], method={"type": "dpo"})  # taken as it is
    assert job.status == "validating_files" and job.method.type == "dpo"
    sdk.fine_tuning.jobs.cancel(job.id)
    lines = a.get("/ui/api/arena/preferences.jsonl").text.splitlines()
    assert len(lines) == saved["pairs"] and set(json.loads(lines[0])) == {"input", "preferred_output", "non_preferred_output"}


def test_a_keyless_server_needs_no_login_and_answers_only_local_pages(tiny_model_dir: Path, home: None) -> None:
    from tailored.dashboard import attach
    from tailored.serve.server import Running, build

    with Running(attach(build(base=str(tiny_model_dir), port=0, jobs=False))) as srv:
        c = httpx.Client(base_url=root(srv))
        page = c.get("/")
        assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
        assert c.get("/", headers={"host": "evil.example"}).status_code == 403  # DNS rebinding
        body = {"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert c.post("/v1/chat/completions", json=body).status_code == 403  # the cookie alone changes nothing
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        assert c.post("/v1/chat/completions", json=body, headers={"x-csrf-token": csrf}).status_code == 200
        assert c.get("/ui/api/runs").json() == {"data": []}
        assert '<meta name="traffic-log" content="0">' in page.text  # nothing logged: no feedback buttons


def test_the_leaderboard_ranks_by_bradley_terry_with_bootstrap_intervals() -> None:
    votes = [{"models": ["x", "y"], "vote": "a", "answers": ["good", "bad"], "messages": []}] * 8 + \
            [{"models": ["y", "x"], "vote": "a", "answers": ["fine", "meh"], "messages": []}] * 2 + \
            [{"models": ["x", "z"], "vote": "tie", "answers": ["same", "same"], "messages": []},
             {"models": ["z", "y"], "vote": "both_bad", "answers": ["?", "!"], "messages": []}]
    board = leaderboard(votes)
    x, y = (next(r for r in board["data"] if r["model"] == m) for m in ("x", "y"))
    assert [r["model"] for r in board["data"]][0] == "x" and x["bt"] > y["bt"]
    assert x["wins"] == 8 and x["losses"] == 2 and x["ties"] == 1 and x["win_rate"] == round(8.5 / 11, 3)
    assert x["bt_low"] <= x["bt"] <= x["bt_high"] and y["both_bad"] == 1
    even = bradley_terry([("p", "q", 1.0), ("p", "q", 0.0)], ["p", "q"])
    assert abs(even["p"] - even["q"]) < 1e-6
    rows, left_out = preference_rows(votes)
    assert len(rows) == 10 and left_out == {"identical": 0, "empty": 0} and rows[-1]["preferred_output"][0]["content"] == "fine"
    stopped = [{"models": ["x", "y"], "vote": "b", "answers": ["fine", " "], "messages": []},
               {"models": ["x", "y"], "vote": "a", "answers": ["same", "same "], "messages": []}]
    assert preference_rows(stopped) == ([], {"identical": 1, "empty": 1})  # an empty answer would make the file invalid


def test_the_arena_pairs_each_run_once_as_it_is_served_by_default(tmp_path: Path) -> None:
    """A job's model (its best weights) and its last checkpoint (the final weights) are one run: the arena picks
    the model, never the checkpoint, even when best and final differ (the browser test met that case)."""
    from tailored.dashboard.routes_arena import distinct_models
    from tailored.serve.registry import Entry

    run, other = tmp_path / "job-run", tmp_path / "cli-run"
    entries = [Entry(id="smol", kind="base", created=0),
               Entry(id="ft:smol:a:dash:x:ckpt-step-4", kind="adapter", created=0, run_dir=run, which="final"),
               Entry(id="ft:smol:a:dash:x:ckpt-step-2", kind="adapter", created=0, run_dir=run, which="step-000002"),
               Entry(id="ft:smol:a:dash:x", kind="adapter", created=0, run_dir=run, which="best"),
               Entry(id="cli-run", kind="adapter", created=0, run_dir=other, which="final")]
    assert sorted(distinct_models(entries)) == ["cli-run", "ft:smol:a:dash:x", "smol"]
