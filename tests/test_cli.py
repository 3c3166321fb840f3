"""The CLI end to end on a tiny model: check → train → chat, with exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tailored(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tailored.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_check_train_chat(tiny_model_dir, chat_file, tmp_path):
    done = tailored("data", "check", str(chat_file), "--model", str(tiny_model_dir))
    assert done.returncode == 0, done.stderr
    assert "48 valid examples" in done.stdout and "training tokens" in done.stdout and "OK" in done.stdout
    done = tailored("data", "check", str(chat_file), "--model", "none", "--json")
    report = json.loads(done.stdout)
    assert report["ok"] and report["valid_examples"] == 48

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {chat_file}\nmodel: {tiny_model_dir}\nmax_steps: 3\nlora_r: 4\n")
    out = tmp_path / "run"
    done = tailored("train", "--config", str(cfg), "--batch-size", "4", "--output", str(out), "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "done: 3 steps" in done.stdout and f"run folder: {out}" in done.stdout
    assert "trainable" in done.stdout and "learning rate" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"]["options"]["lora_r"] == 4 and manifest["hyperparameters"]["batch_size"] == 4

    done = tailored("chat", str(out), "--prompt", "the a of", "--max-new-tokens", "3")
    assert done.returncode == 0, done.stderr


def test_errors_exit_non_zero_with_a_hint(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{oops\n')
    done = tailored("data", "check", str(bad), "--model", "none")
    assert done.returncode == 1
    assert "line 1" in done.stdout and "line 2" in done.stdout and "no_assistant_message" in done.stdout
    done = tailored("train", "--data", str(bad), "--model", str(tiny_model_dir), "--output", str(tmp_path / "r"))
    assert done.returncode == 1 and "line 2" in done.stderr and "hint:" in done.stderr
    done = tailored("train", "--data", str(bad), "--lora-rank", "3")
    assert done.returncode != 0
    done = tailored("train", "--data", str(bad), "--model", str(tmp_path / "nope"))
    assert done.returncode == 1 and "no such file or folder" in done.stderr


def test_an_unexpected_error_is_one_line_and_a_log_file(tmp_path, monkeypatch, capsys):
    import tailored.train.preflight
    from tailored.cli.main import main

    def boom(*args, **kwargs):
        raise RuntimeError("something nobody expected\nsecond line")

    monkeypatch.setenv("TAILORED_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tailored.train.preflight, "check_data", boom)
    assert main(["data", "check", "x.jsonl", "--model", "none"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RuntimeError: something nobody expected" in err and "second line" not in err
    [log] = (tmp_path / "home" / "logs").glob("crash-*.txt")
    assert str(log) in err and "--debug" in err
    text = log.read_text()
    assert "Traceback" in text and "boom" in text and "second line" in text and "data check x.jsonl" in text
    with pytest.raises(RuntimeError, match="nobody expected"):
        main(["--debug", "data", "check", "x.jsonl", "--model", "none"])
