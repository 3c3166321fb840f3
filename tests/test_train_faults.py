"""Nothing lost, nothing crashes: training under real faults.

Each test breaks a run for real: ``kill -9`` of the training process (at random moments and in the
middle of a checkpoint write), a full disk (``RLIMIT_FSIZE`` set on the running process), a read-only
checkpoints folder (``chattr +i``), a loss that really becomes NaN (an absurd learning rate), and a
``--resume`` with other settings or data. ``threads: auto`` is tested on injected CPU samples and on
this machine with a high load average.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tailored
from tailored.errors import CheckpointError, TailoredError
from tailored.train import threads as train_threads
from tailored.train.checkpoint import STATE_FILE, list_checkpoints

REPO = Path(__file__).resolve().parents[1]
SAVE_EVERY = 2


def _metrics(run: Path) -> list[dict]:
    """metrics.jsonl's records; a torn last line (a process killed while writing it) is left out."""
    if not (run / "metrics.jsonl").is_file():
        return []
    lines = (run / "metrics.jsonl").read_text().split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            assert i == len(lines) - 1, f"line {i + 1} of metrics.jsonl is damaged: {line!r}"
    return records


def _train_losses(run: Path) -> list[float]:
    return [r["loss"] for r in _metrics(run) if r["split"] == "train"]


def _assert_complete(ckpt: Path) -> None:
    """Every file of a checkpoint is there and readable."""
    from safetensors import safe_open

    state = json.loads((ckpt / STATE_FILE).read_text())
    assert state["step"] == int(ckpt.name.split("-")[1])
    for f in (ckpt / "optimizer.safetensors", ckpt / "rng.safetensors", ckpt / "weights" / "adapter_model.safetensors"):
        with safe_open(str(f), "pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    json.loads((ckpt / "weights" / "adapter_config.json").read_text())


def _temporaries(run: Path) -> set[str]:
    """Hidden temporary folders of an atomic write in progress (or left by a killed one)."""
    found = set()
    for folder in (run, run / "checkpoints"):
        if folder.is_dir():
            found |= {str(p) for p in folder.iterdir() if p.name.startswith(".") and ".tmp-" in p.name}
    return found


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tailored.cli.main", "train", *args]


def _settings(tiny_model_dir: Path, chat_file: Path, validation: Path, steps: int) -> list[str]:
    return ["--data", str(chat_file), "--validation", str(validation), "--model", str(tiny_model_dir),
            "--max-steps", str(steps), "--batch-size", "4", "--save-every", str(SAVE_EVERY), "--threads", "1",
            "--learning-rate-multiplier", "20", "--red-flags", "off"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env



# ---- threads: auto ---------------------------------------------------------------------------------

def test_auto_threads_is_a_function_of_cores_and_what_is_busy_now():
    from tailored.train.threads import CpuTimes, auto_threads, busy_cores

    assert auto_threads(2, 0.0) == 2
    assert auto_threads(2, 0.3) == 2  # a little background noise
    assert auto_threads(2, 1.0) == 1  # one core taken by another process
    assert auto_threads(2, 2.0) == 1  # never fewer than one
    assert auto_threads(16, 3.2) == 13
    assert auto_threads(16, 0.0, world_size=4) == 4  # shared among processes
    assert auto_threads(2, 0.0, world_size=4) == 1
    # busy cores over a sample: other processes' busy time, this process's own left out
    cores = 2
    before = CpuTimes(busy=10_000, total=40_000, own=500)
    idle_but_me = CpuTimes(busy=10_000 + 50, total=40_000 + 100, own=500 + 50)  # only this process ran
    assert busy_cores(before, idle_but_me, cores) == pytest.approx(0.0)
    one_taken = CpuTimes(busy=10_000 + 50, total=40_000 + 100, own=500)  # 50 of 100 jiffies: one of two cores
    assert busy_cores(before, one_taken, cores) == pytest.approx(1.0)
    assert auto_threads(cores, busy_cores(before, one_taken, cores)) == 1
    assert busy_cores(before, before, cores) == 0.0  # no time passed: nothing known, nothing busy


def test_a_fresh_process_on_an_idle_machine_takes_every_core_whatever_the_load_average(monkeypatch):
    """The 1-minute load average still holds the previous command's load; what is busy *now* decides."""
    if not Path("/proc/stat").is_file():
        pytest.skip("needs /proc/stat (Linux)")
    for name in ("TAILORED_THREADS", "PYTEST_XDIST_WORKER", "CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))  # a decaying average of earlier runs
    samples = []
    real = train_threads.busy_cores_now
    monkeypatch.setattr(train_threads, "busy_cores_now", lambda *a, **k: samples.append(real(*a, **k)) or samples[-1])
    cores = os.cpu_count() or 1
    before = torch.get_num_threads()
    try:
        for _ in range(8):  # the machine is shared: wait for a moment when nothing else runs
            n = train_threads.configure_threads("auto")
            if samples[-1] < 0.45:
                assert n == cores, (n, samples[-1])
                break
            assert n == train_threads.auto_threads(cores, samples[-1])
            time.sleep(1.0)
        else:
            pytest.skip(f"the machine never went idle (busy cores: {samples})")
    finally:
        torch.set_num_threads(before)


def test_busy_cores_now_sees_another_process_spinning():
    if not Path("/proc/stat").is_file():
        pytest.skip("needs /proc/stat (Linux)")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert train_threads.busy_cores_now(0.3) >= 0.6
    finally:
        spinner.kill()
        spinner.wait()


# ---- kill -9 ---------------------------------------------------------------------------------------

def _kill(cmd: list[str], run: Path, log: Path, when: str, rng: random.Random) -> str:
    """Start ``cmd`` and SIGKILL it: ``random`` (a random moment of the training) or ``mid-write`` (as soon as
    a new checkpoint's temporary folder appears). Returns how it ended: killed, killed-mid-write, finished."""
    started = time.time()
    existing = _temporaries(run)
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env())
    deadline = time.time() + 240
    try:
        if when == "random":
            metrics = run / "metrics.jsonl"
            while proc.poll() is None and time.time() < deadline:
                if metrics.is_file() and metrics.stat().st_mtime > started:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is not None:
                return "finished"
            os.kill(proc.pid, signal.SIGKILL)
            return "killed"
        ckpts = run / "checkpoints"
        while proc.poll() is None and time.time() < deadline:
            try:
                names = os.listdir(ckpts)
            except FileNotFoundError:
                names = []
            fresh = [n for n in names if n.startswith(".step-") and ".tmp-" in n and str(ckpts / n) not in existing]
            if fresh:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed-mid-write" if (ckpts / fresh[0]).exists() else "killed"
            time.sleep(0.001)  # a checkpoint write of the tiny model takes ~20 ms
        return "finished" if proc.poll() is not None else "timeout"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _check_after_kill(run: Path) -> None:
    """What a kill may leave: only complete checkpoints, at most one interval behind the last logged step."""
    ckpts = list_checkpoints(run)
    for ckpt in ckpts:
        _assert_complete(ckpt)
    logged = [r["step"] for r in _metrics(run) if r["split"] == "train"]
    newest = int(ckpts[-1].name.split("-")[1]) if ckpts else 0
    if logged:
        assert max(logged) - newest <= SAVE_EVERY, (max(logged), [c.name for c in ckpts])


def test_kill_9_at_any_moment_loses_at_most_one_interval_and_resume_finishes(tiny_model_dir, chat_file, tmp_path):
    from tailored.testing.tiny import write_chat_dataset

    validation = write_chat_dataset(tmp_path / "val.jsonl", n=8, seed=1)
    steps = 40
    settings = _settings(tiny_model_dir, chat_file, validation, steps)
    run, log = tmp_path / "run", tmp_path / "train.log"
    rng = random.Random(int(os.environ.get("TAILORED_FAULT_SEED", "0")) or None)
    ends = [_kill(_cli(*settings, "--output", str(run)), run, log, "random", rng)]
    _check_after_kill(run)
    resume = _cli("--resume", "--output", str(run))
    for _ in range(4):  # a kill in the middle of a checkpoint write (the kill may land just after the rename: again)
        ends.append(_kill(resume, run, log, "mid-write", rng))
        _check_after_kill(run)
        if ends[-1] in ("killed-mid-write", "finished"):
            break
    assert "killed-mid-write" in ends, (ends, log.read_text()[-3000:])
    ends.append(_kill(resume, run, log, "random", rng))
    _check_after_kill(run)
    done = subprocess.run(resume, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["metrics"]["steps"] == steps
    records = _metrics(run)
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, steps + 1))  # none twice, none missing
    val_steps = [r["step"] for r in records if r["split"] == "validation"]
    assert val_steps == sorted(set(val_steps)) and val_steps[0] == 0
    assert not _temporaries(run), _temporaries(run)  # what the killed writes left is cleaned up
    for ckpt in list_checkpoints(run):
        _assert_complete(ckpt)
    # and the killed-and-resumed run is the uninterrupted run
    whole = tailored.train(data=str(chat_file), validation=str(validation), model=str(tiny_model_dir),
                           output=str(tmp_path / "whole"), max_steps=steps, batch_size=4, save_every=SAVE_EVERY,
                           threads=1, learning_rate_multiplier=20, red_flags="off")
    assert _train_losses(run) == pytest.approx(_train_losses(whole.run_dir), abs=1e-5), ends


# ---- a full or read-only disk -----------------------------------------------------------------------

def _break_disk_after_first_checkpoint(cmd: list[str], run: Path, breaking) -> tuple[int, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=_env())
    try:
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline and not list_checkpoints(run):
            time.sleep(0.005)
        assert proc.poll() is None, proc.communicate()[0]
        breaking(proc)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, output


def _assert_clear_error_and_good_checkpoint(code: int, output: str, run: Path, words: str) -> Path:
    assert code == 1, output
    assert "Traceback" not in output, output
    error = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error) == 1, output
    assert words in error[0] and str(run / "checkpoints") in error[0], error[0]
    ckpts = list_checkpoints(run)
    assert ckpts, output
    assert ckpts[-1].name in error[0], error[0]  # the last good checkpoint, named
    assert "--resume" in output
    for ckpt in ckpts:
        _assert_complete(ckpt)
    return ckpts[-1]


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs resource.prlimit (Linux)")
def test_a_full_disk_stops_with_one_clear_error_and_the_last_checkpoint_loads(tiny_model_dir, chat_file, tmp_path,
                                                                              capsys):
    from tailored.testing.tiny import write_chat_dataset

    validation = write_chat_dataset(tmp_path / "val.jsonl", n=8, seed=1)
    run = tmp_path / "run"
    cmd = _cli(*_settings(tiny_model_dir, chat_file, validation, 60), "--output", str(run))

    def fill_the_disk(proc):  # from now on no file of the process may grow past 64 kB (a checkpoint's weights are 130 kB)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (64_000, 64_000))

    code, output = _break_disk_after_first_checkpoint(cmd, run, fill_the_disk)
    good = _assert_clear_error_and_good_checkpoint(code, output, run, "disk is full")
    assert not any(".tmp-" in p.name for p in (run / "checkpoints").iterdir())  # the failed write left nothing
    # room again: the last good checkpoint loads and the run finishes
    capsys.readouterr()
    result = tailored.train(resume=True, output=str(run))
    assert f"from {good.name}" in capsys.readouterr().out
    assert result.loop.steps == 60 and json.loads((run / "manifest.json").read_text())["status"] == "completed"
    assert [r["step"] for r in _metrics(run) if r["split"] == "train"] == list(range(1, 61))


def test_a_read_only_checkpoints_folder_stops_with_one_clear_error(tiny_model_dir, chat_file, tmp_path):
    from tailored.testing.tiny import write_chat_dataset

    if not shutil.which("chattr"):
        pytest.skip("needs chattr")
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not allowed here (needs CAP_LINUX_IMMUTABLE and ext4/xfs)")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    validation = write_chat_dataset(tmp_path / "val.jsonl", n=8, seed=1)
    run = tmp_path / "run"
    cmd = _cli(*_settings(tiny_model_dir, chat_file, validation, 60), "--output", str(run))

    def read_only(proc):  # root ignores chmod; an immutable folder stops root too
        subprocess.run(["chattr", "+i", str(run / "checkpoints")], check=True)

    try:
        code, output = _break_disk_after_first_checkpoint(cmd, run, read_only)
    finally:
        subprocess.run(["chattr", "-i", str(run / "checkpoints")])
    _assert_clear_error_and_good_checkpoint(code, output, run, "not writable")
    result = tailored.train(resume=True, output=str(run))
    assert result.loop.steps == 60


def test_write_problems_are_named():
    import errno

    from tailored.train.checkpoint import disk_problem

    assert "disk is full" in disk_problem(OSError(errno.ENOSPC, "No space left on device"))
    assert "disk is full" in disk_problem(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert "disk is full" in disk_problem(OSError(errno.EFBIG, "File too large"))
    assert "not writable" in disk_problem(OSError(errno.EROFS, "Read-only file system"))
    assert "not writable" in disk_problem(PermissionError(errno.EACCES, "Permission denied"))
    assert "disk is full" in disk_problem(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert disk_problem(OSError(errno.ENOENT, "No such file")) is None
    assert disk_problem(RuntimeError("something else")) is None


# ---- NaN -------------------------------------------------------------------------------------------

def test_a_nan_loss_stops_the_run_with_the_step_the_last_checkpoint_and_a_fix(tiny_model_dir, chat_file, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TailoredError) as err:  # a learning rate of 2e26: the weights blow up in one step
        tailored.train(data=str(chat_file), model=str(tiny_model_dir), output=str(run), batch_size=4, max_steps=8,
                       save_every=1, threads=1, learning_rate_multiplier=1e30, red_flags="off")
    text = str(err.value)
    step = int(text.split("at step ")[1].split()[0].rstrip(",.:;"))
    assert "nan" in text.lower() or "inf" in text.lower()
    assert "learning_rate_multiplier" in (err.value.hint or "")
    ckpts = list_checkpoints(run)
    assert ckpts and all(int(c.name.split("-")[1]) < step for c in ckpts)  # nothing saved from the bad step on
    assert ckpts[-1].name in text
    assert not (run / "adapter").exists()  # no "final" weights from a diverged run
    # nothing non-finite was logged: every line is strict JSON with finite numbers
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"metrics.jsonl holds {c}: {line}"))
        assert math.isfinite(record["loss"])
    assert max(r["step"] for r in _metrics(run)) == step - 1
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"


# ---- --resume with other settings ------------------------------------------------------------------

def _interrupted_run(tiny_model_dir, chat_file, validation, out, **kw):
    """A run stopped after step 2 (its checkpoint), as a killed one would be."""
    result = tailored.train(data=str(chat_file), validation=str(validation), model=str(tiny_model_dir), output=str(out),
                            batch_size=4, max_steps=4, save_every=2, threads=1, lora_r=8, red_flags="off", **kw)
    shutil.rmtree(result.run_dir / "adapter")
    return result.run_dir


def test_resume_with_other_settings_or_data_is_refused_listing_every_difference(tiny_model_dir, chat_file, tmp_path):
    from tailored.testing.tiny import save_tiny_model, write_chat_dataset

    validation = write_chat_dataset(tmp_path / "val.jsonl", n=8, seed=1)
    run = _interrupted_run(tiny_model_dir, chat_file, validation, tmp_path / "run")
    other_data = write_chat_dataset(tmp_path / "other.jsonl", n=48, seed=5)
    other_model = save_tiny_model(tmp_path / "other-model", seed=3)
    with pytest.raises(CheckpointError) as err:
        tailored.train(resume=True, output=str(run), lora_r=16, seed=7, learning_rate_multiplier=3.0, batch_size=8,
                       max_seq_length=512, data=str(other_data), model=str(other_model))
    text = str(err.value)
    for expected in ("lora_r: 8 in the run, 16 now", "seed: 42 in the run, 7 now",
                     "learning_rate_multiplier: 8.0 in the run, 3.0 now",  # auto, by size: x8 for the tiny model
                     "batch_size: 4 in the run, 8 now",
                     "max_seq_length: 1024 in the run, 512 now"):
        assert expected in text, text
    assert "data:" in text and "other.jsonl" in text
    assert "model:" in text
    # the data or the validation file changed in place
    validation.write_text(validation.read_text().replace("the", "a"))
    with pytest.raises(CheckpointError, match="validation:"):
        tailored.train(resume=True, output=str(run))
    # what does not change the run's meaning may change: threads, micro-batch size
    run2 = _interrupted_run(tiny_model_dir, chat_file, write_chat_dataset(tmp_path / "val2.jsonl", n=8, seed=1),
                            tmp_path / "run2")
    result = tailored.train(resume=True, output=str(run2), threads=2, micro_batch_tokens=64)
    assert result.loop.steps == 4


def test_resume_with_the_same_settings_repeated_is_accepted(tiny_model_dir, chat_file, tmp_path):
    """The jobs runner resumes with --config holding the job's settings ("auto" ones too)."""
    validation = tmp_path / "val.jsonl"
    shutil.copy(chat_file, validation)
    run = tmp_path / "run"
    result = tailored.train(data=str(chat_file), validation=str(validation), model=str(tiny_model_dir), output=str(run),
                            max_steps=4, save_every=2, threads=1, red_flags="off")
    shutil.rmtree(result.run_dir / "adapter")
    config = tmp_path / "job.yaml"
    config.write_text(f"data: {chat_file}\nvalidation: {validation}\nmodel: {tiny_model_dir}\noutput: {run}\n"
                      "max_steps: 4\nsave_every: 2\nepochs: auto\nbatch_size: auto\nlearning_rate_multiplier: auto\n"
                      "threads: 1\nred_flags: 'off'\n")
    again = tailored.train(resume=True, config_file=str(config), output=str(run))
    assert again.loop.steps == 4


def test_resume_survives_a_torn_metrics_line_and_a_run_without_checkpoint(tiny_model_dir, chat_file, tmp_path):
    run = tmp_path / "run"
    tailored.train(data=str(chat_file), validation=str(chat_file), model=str(tiny_model_dir), output=str(run),
                   batch_size=8, max_steps=4, save_every=100, threads=1, red_flags="off")
    expected = _train_losses(run)
    # as if killed during step 3, before any checkpoint, while appending a line
    shutil.rmtree(run / "adapter")
    kept = [line for line in (run / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 2]
    (run / "metrics.jsonl").write_text("\n".join(kept) + '\n{"step": 3, "epoch": 0.5, "spl')
    assert not list_checkpoints(run)
    result = tailored.train(resume=True, output=str(run))
    assert result.loop.steps == 4
    records = _metrics(run)
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["split"] == "validation"].count(0) == 1
    assert _train_losses(run) == pytest.approx(expected, abs=1e-5)
