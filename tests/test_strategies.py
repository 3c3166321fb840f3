"""--strategy fsdp|zero2|zero3 and --nproc/--nnodes: the sharded runs reach one process's losses and weights.

Tolerance: the processes sum the same per-token losses and gradients as one process does, only in
another order (all-reduce / reduce-scatter of fp32 partial sums), so losses agree to float32 rounding
(~1e-7 relative per step, growing slowly over a few steps); the logged losses are rounded to 5
decimals, so ``rel=1e-4`` fails on any real difference (a missed micro-batch, a wrong scale) and never
on rounding. Saved weights are compared by the logits they give (atol 1e-4 on values of order 1).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tailored
from tailored.config.schema import TrainConfig
from tailored.errors import ConfigError
from tailored.train.engines import deepspeed_config, fsdp_settings
from tailored.train.launch import torchrun_command
from tailored.train.strategy import check_strategy

COMMON = {"max_steps": 6, "batch_size": 8, "learning_rate_multiplier": 20, "threads": 1, "micro_batch_tokens": 64,
          "red_flags": "off"}


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


def _flags(settings: dict) -> list[str]:
    return [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def _train(settings: dict, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tailored.cli.main", "train", *_flags(settings), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env or dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _one(tiny_model_dir, chat_file, out: Path, **settings) -> Path:
    return tailored.train(data=str(chat_file), model=str(tiny_model_dir), output=str(out), **{**COMMON, **settings}).run_dir


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([[1, 5, 9, 12, 40, 7]])).logits


def _cut_after(run: Path, step: int) -> None:
    """As if the run had been killed right after its checkpoint at ``step``."""
    for name in ("adapter", "model", "best"):
        shutil.rmtree(run / name, ignore_errors=True)
    for ck in (run / "checkpoints").iterdir():
        if ck.name != f"step-{step:06d}":
            shutil.rmtree(ck)


# ---- settings, checked before any process starts ----

def _cfg(**kw) -> TrainConfig:
    return TrainConfig(data="x.jsonl", **kw)


def test_settings_are_checked_against_the_strategy():
    assert check_strategy(_cfg(strategy="fsdp"), None, cuda=False) == []
    assert "ddp keeps a whole copy" in check_strategy(_cfg(cpu_offload=True), None, cuda=True)[0]
    assert "on the CPU already" in check_strategy(_cfg(strategy="zero3", cpu_offload=True), None, cuda=False)[0]
    qlora = check_strategy(_cfg(strategy="fsdp"), "4-bit nf4", cuda=False)
    assert len(qlora) == 1 and "needs CUDA" in qlora[0] and "bf16" in qlora[0]
    assert check_strategy(_cfg(strategy="fsdp"), "4-bit nf4", cuda=True) == []
    assert "ddp takes no engine config" in check_strategy(_cfg(strategy_config="ds.json"), None, cuda=False)[0]
    assert "below nnodes" in check_strategy(_cfg(nnodes=2, node_rank=2), None, cuda=False)[0]


def test_cli_refuses_bad_strategy_settings_once_before_launching(tiny_model_dir, chat_file):
    from tailored.cli.main import main

    assert main(["train", "--data", str(chat_file), "--model", str(tiny_model_dir), "--strategy", "fsdp",
                 "--nproc", "2", "--cpu-offload"]) == 2


def test_sharded_strategy_outside_torchrun_says_how_to_launch(tiny_model_dir, chat_file, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="--nproc"):
        tailored.train(data=str(chat_file), model=str(tiny_model_dir), strategy="fsdp", output=str(tmp_path / "r"))


def test_deepspeed_config_from_the_run_and_a_users_file(tmp_path):
    ds = deepspeed_config(_cfg(strategy="zero3", max_grad_norm=0.5), "fp32", world=4)
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_clipping"] == 0.5 and ds["train_batch_size"] == 4
    assert ds["bf16"] == {"enabled": False}
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": "auto", "overlap_comm": True}, "bf16": {"enabled": "auto"},
                               "communication_data_type": "fp32"}))
    ds = deepspeed_config(_cfg(strategy="zero2", strategy_config=str(own)), "bf16", world=2)
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": True} and ds["communication_data_type"] == "fp32"
    assert ds["bf16"] == {"enabled": True}
    own.write_text(json.dumps({"zero_optimization": {"stage": 3}, "gradient_clipping": 2.0, "optimizer": {"type": "Adam"}}))
    with pytest.raises(ConfigError) as err:
        deepspeed_config(_cfg(strategy="zero2", strategy_config=str(own)), "fp32", world=2)
    text = str(err.value)
    assert "stage is 3" in text and "gradient_clipping is 2.0" in text and "'optimizer'" in text


def test_fsdp_settings_from_an_accelerate_config(tmp_path):
    own = tmp_path / "accelerate.yaml"
    own.write_text("distributed_type: FSDP\nmixed_precision: 'no'\nfsdp_config:\n  fsdp_version: 2\n"
                   "  fsdp_reshard_after_forward: false\n  fsdp_offload_params: false\n")
    assert fsdp_settings(_cfg(strategy="fsdp", strategy_config=str(own)), "fp32")["reshard_after_forward"] is False
    own.write_text("mixed_precision: bf16\nfsdp_config:\n  fsdp_version: 1\n  fsdp_sharding_strategy: FULL_SHARD\n")
    with pytest.raises(ConfigError) as err:
        fsdp_settings(_cfg(strategy="fsdp", strategy_config=str(own)), "fp32")
    assert "fsdp_version 1" in str(err.value) and "fsdp_sharding_strategy" in str(err.value) and "precision" in str(err.value)


def test_torchrun_command_for_one_node_and_for_a_cluster():
    launch = {"strategy": "fsdp", "nproc": 4, "nnodes": 1, "node_rank": 0, "master_addr": "127.0.0.1", "master_port": 29500}
    settings = {"data": "d.jsonl", "strategy": "fsdp", "nproc": 4, "gradient_checkpointing": True}
    one = torchrun_command(settings, launch)
    assert "--standalone" in one and "--nproc-per-node=4" in one and "--gradient-checkpointing" in one
    assert "--nproc" not in one and one[one.index("--strategy") + 1] == "fsdp"  # torchrun's own flag names stay torchrun's
    two = torchrun_command(settings, {**launch, "nnodes": 2, "node_rank": 1, "master_addr": "10.0.0.1"}, resume=True)
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29500", "--resume"} <= set(two)


# ---- real runs: 2 processes on gloo ----

@pytest.mark.slow
def test_fsdp_full_fine_tune_matches_one_process_and_loads_in_transformers(tiny_model_dir, chat_file, tmp_path):
    from transformers import AutoModelForCausalLM

    settings = {"data": chat_file, "model": tiny_model_dir, **COMMON, "method": "full", "max_steps": 4}
    done = _train({**settings, "strategy": "fsdp", "nproc": 2, "output": tmp_path / "fsdp"})
    assert "launching: " in done.stdout and "--nproc-per-node=2" in done.stdout
    one = _one(tiny_model_dir, chat_file, tmp_path / "one", method="full", max_steps=4)
    assert _losses(tmp_path / "fsdp") == pytest.approx(_losses(one), rel=1e-4)
    manifest = json.loads((tmp_path / "fsdp" / "manifest.json").read_text())
    assert manifest["environment"]["strategy"] == "fsdp" and manifest["environment"]["processes"] == 2
    assert manifest["config"]["nproc"] == 2
    # the estimate of the same run: what one process holds between steps is its half of the weights and AdamW
    # states (the estimate counts them exactly; only FSDP's uneven last shard could differ, by < 1%)
    from tailored.estimate.report import estimate

    est = estimate(model=str(tiny_model_dir), method="full", strategy="fsdp", nproc=2, calibrate="none")
    held = manifest["environment"]["state_bytes_per_process"]
    assert est.memory.held_state == pytest.approx(held, rel=0.01)
    assert est.memory.held_state == pytest.approx(json.loads((one / "manifest.json").read_text())["environment"]
                                                  ["state_bytes_per_process"] / 2, rel=0.01)
    assert "fsdp" in est.fitting_strategies
    final = [p for p in (tmp_path / "fsdp").iterdir() if (p / "config.json").is_file()][0]
    assert list(final.glob("*.safetensors"))
    ours, ref = (AutoModelForCausalLM.from_pretrained(str(f)) for f in (final, final.parent.parent / "one" / final.name))
    assert torch.allclose(_logits(ours), _logits(ref), atol=1e-4)


@pytest.mark.slow
def test_fsdp_lora_matches_one_process_resumes_and_loads_in_peft(tiny_model_dir, chat_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    settings = {"data": chat_file, "model": tiny_model_dir, **COMMON, "save_every": 3, "strategy": "fsdp", "nproc": 2,
                "output": tmp_path / "fsdp"}
    _train(settings)
    one = _one(tiny_model_dir, chat_file, tmp_path / "one", save_every=3)
    full = _losses(tmp_path / "fsdp")
    assert full == pytest.approx(_losses(one), rel=1e-4)
    _cut_after(tmp_path / "fsdp", 3)
    done = _train({"output": tmp_path / "fsdp", "nproc": 2}, "--resume")
    assert "resuming" in done.stdout
    assert _losses(tmp_path / "fsdp") == pytest.approx(full, rel=1e-4)
    logits = []
    for run in (tmp_path / "fsdp", one):
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
        logits.append(_logits(PeftModel.from_pretrained(base, str(run / "adapter"))))
    assert torch.allclose(logits[0], logits[1], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_deepspeed_zero_trains_like_one_process_and_resumes(strategy, tiny_model_dir, chat_file, tmp_path):
    pytest.importorskip("deepspeed")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / strategy
    _train({"data": chat_file, "model": tiny_model_dir, **COMMON, "save_every": 3, "strategy": strategy, "nproc": 2,
            "output": run})
    one = _one(tiny_model_dir, chat_file, tmp_path / "one", save_every=3)
    full = _losses(run)
    assert full == pytest.approx(_losses(one), rel=1e-4)
    assert {"optimizer-rank0.safetensors", "optimizer-rank1.safetensors"} <= {p.name for p in (run / "checkpoints" / "step-000003").iterdir()}
    assert json.loads((run / "manifest.json").read_text())["environment"]["engine_config"]["zero_optimization"]["stage"] == int(strategy[-1])
    _cut_after(run, 3)
    _train({"output": run, "nproc": 2}, "--resume")
    assert _losses(run) == pytest.approx(full, rel=1e-4)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(one / "adapter"))
    assert torch.allclose(_logits(PeftModel.from_pretrained(base, str(run / "adapter"))), _logits(ref), atol=1e-4)


@pytest.mark.slow
def test_two_nodes_on_loopback_train_like_one_process(tiny_model_dir, chat_file, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = {"data": chat_file, "model": tiny_model_dir, **COMMON, "max_steps": 4, "nnodes": 2, "nproc": 1,
                "master_addr": "127.0.0.1", "master_port": port, "output": tmp_path / "two"}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen([sys.executable, "-m", "tailored.cli.main", "train", *_flags(settings), "--node-rank", str(r)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for r in (0, 1)]
    outs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(outs)
    assert "--nnodes=2" in outs[0] and "--node-rank=1" in outs[1] and "each of the 2 nodes" in outs[0]
    assert "done: 4 steps" in outs[0] and "done:" not in outs[1]  # only the first process of node 0 reports
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["environment"]["processes"] == 2 and manifest["environment"]["nodes"] == 2
    one = _one(tiny_model_dir, chat_file, tmp_path / "one", max_steps=4)
    assert _losses(tmp_path / "two") == pytest.approx(_losses(one), rel=1e-4)
