"""The loop on tiny models: learns, resumes exactly, accumulates exactly, writes a complete run folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tailored
from tailored.errors import CheckpointError, ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def losses(run_dir: Path, split: str = "train") -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [rec["loss"] for rec in lines if rec["split"] == split]


def base_settings(tiny_model_dir, chat_file, out, **kw):
    return dict(data=str(chat_file), model=str(tiny_model_dir), output=str(out), batch_size=8,
                learning_rate_multiplier=20, threads=1, **kw)


def test_run_learns_and_writes_a_complete_run_folder(tiny_model_dir, chat_file, tmp_path):
    result = tailored.train(**base_settings(tiny_model_dir, chat_file, tmp_path / "run", validation=str(chat_file), epochs=4))
    run = result.run_dir
    for name in ("manifest.json", "config.yaml", "metrics.jsonl", "adapter/adapter_model.safetensors",
                 "adapter/adapter_config.json", "tokenizer/tokenizer.json", "best/adapter_model.safetensors"):
        assert (run / name).exists(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["method"]["name"] == "lora" and manifest["method"]["options"]["lora_r"] == 16
    assert manifest["hyperparameters"]["epochs"] == 4 and manifest["hyperparameters"]["batch_size"] == 8
    assert len(manifest["data"]["train"]["sha256"]) == 64 and manifest["base_model"]["content_hash"]
    assert "<|im_start|>" in manifest["chat_template"] and manifest["eos_token_ids"]
    assert manifest["metrics"]["validation_loss"] < manifest["metrics"]["initial_validation_loss"]
    train = losses(run)
    assert len(train) == manifest["hyperparameters"]["total_steps"]
    assert sum(train[-4:]) / 4 < sum(train[:4]) / 4 * 0.97
    # the adapter loads with plain peft, unchanged
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(run / "adapter"))
    # and through tailored.load, with the training template
    model = tailored.load(run)
    assert model.tokenizer.chat_template == manifest["chat_template"]
    assert isinstance(model.chat("the a", max_new_tokens=4), str)


def test_resume_matches_an_uninterrupted_run(tiny_model_dir, chat_file, tmp_path):
    full = tailored.train(**base_settings(tiny_model_dir, chat_file, tmp_path / "full", max_steps=12, lora_dropout=0.1))
    # same run, "killed" after step 6: run to 6 with a checkpoint there, then resume to 12
    part = base_settings(tiny_model_dir, chat_file, tmp_path / "part", max_steps=12, lora_dropout=0.1, save_every=6)
    first = tailored.train(**part)
    # drop everything after the step-6 checkpoint, as if the process had died there
    import shutil

    run = first.run_dir
    shutil.rmtree(run / "adapter")
    for ck in (run / "checkpoints").iterdir():
        if ck.name != "step-000006":
            shutil.rmtree(ck)
    resumed = tailored.train(resume=True, output=str(run))
    assert resumed.loop.steps == 12
    assert losses(run) == pytest.approx(losses(full.run_dir), abs=1e-5)
    assert len(losses(run)) == 12


def test_micro_batching_does_not_change_the_gradient(tiny_model_dir, chat_file, tmp_path):
    one = tailored.train(**base_settings(tiny_model_dir, chat_file, tmp_path / "one", max_steps=6, micro_batch_tokens=100_000))
    many = tailored.train(**base_settings(tiny_model_dir, chat_file, tmp_path / "many", max_steps=6, micro_batch_tokens=16))
    assert losses(one.run_dir) == pytest.approx(losses(many.run_dir), rel=1e-4)


def test_bad_settings_are_all_reported(tiny_model_dir, chat_file, tmp_path):
    with pytest.raises(ConfigError) as err:
        tailored.train(data=str(chat_file), model=str(tiny_model_dir), epochs=0, lora_rr=3, batch_size="lots")
    text = str(err.value)
    assert "epochs" in text and "lora_rr" in text and "did you mean 'lora_r'" in text and "batch_size" in text


def test_invalid_data_is_refused_with_the_report(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    bad.write_text("\n".join([json.dumps(good)] * 11 + ["{oops"]) + "\n")
    with pytest.raises(DataError, match="line 12"):
        tailored.train(data=str(bad), model=str(tiny_model_dir), output=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_existing_run_is_not_overwritten_and_resume_needs_a_run(tiny_model_dir, chat_file, tmp_path):
    tailored.train(**base_settings(tiny_model_dir, chat_file, tmp_path / "r", max_steps=1))
    with pytest.raises(CheckpointError, match="already holds a run"):
        tailored.train(**base_settings(tiny_model_dir, chat_file, tmp_path / "r", max_steps=1))
    with pytest.raises(CheckpointError, match="--resume needs --output"):
        tailored.train(resume=True, output=str(tmp_path / "nothing"))


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tiny_model_dir, chat_file, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tailored.cli.main", "train", "--data", str(chat_file), "--model", str(tiny_model_dir),
           "--output", str(out), "--max-steps", "100000", "--batch-size", "4", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "--resume --output" in output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    ckpts = sorted((out / "checkpoints").iterdir())
    assert ckpts and (ckpts[-1] / "trainer_state.json").is_file()
    step = json.loads((ckpts[-1] / "trainer_state.json").read_text())["step"]
    assert step >= 1
    # shorten the run through its config, then resume to the end
    cfg = (out / "config.yaml").read_text().replace("max_steps: 100000", f"max_steps: {step + 2}")
    (out / "config.yaml").write_text(cfg)
    result = tailored.train(resume=True, output=str(out))
    assert result.loop.steps == step + 2 and json.loads((out / "manifest.json").read_text())["status"] == "completed"


def test_progress_line_shows_rate_and_eta(capsys):
    from tailored.train.progress import Progress

    bar = Progress("train", 10, start=2, unit="step")  # a resumed run: the 2 earlier steps are not in the rate
    bar.t0 -= 8.0  # 8 s into this process
    bar.update(6, info="loss 1.2345")  # 4 steps in 8 s → 2.0 s/step, 4 steps left → ETA 8 s
    bar.advance(4)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "train 6/10 · loss 1.2345 · 2.0 s/step · ETA 8s"
    assert lines[-1].startswith("train 10/10 · ") and lines[-1].endswith("ETA 0s")
    fast = Progress("answers", 100, unit="answer")
    fast.t0 -= 2.0
    fast.update(50)
    assert fast.rate == pytest.approx(25.0, rel=0.01) and fast.eta == pytest.approx(2.0, rel=0.01)
    assert re.fullmatch(r"answers 50/100 · 2[45]\.\d answer/s · ETA 2s\n", capsys.readouterr().err)
