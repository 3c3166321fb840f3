"""``tailored estimate``: parameter counts, memory against published figures and measured runs, time, money."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.estimate.memory import GIB, TrainSetup, estimate_memory, footprint
from tailored.estimate.report import cpu_memory, estimate
from tailored.estimate.shapes import resolve_shape
from tailored.models.shapes import PRESETS

# Published totals (config.json of each model / model cards).
PUBLISHED_PARAMS = {"7b": 6.738e9, "13b": 13.016e9, "70b": 68.977e9, "8b": 8.030e9, "t0-3b": 2.85e9, "1b": 1.236e9}


@pytest.mark.parametrize("size", sorted(PUBLISHED_PARAMS))
def test_parameter_counts(size: str) -> None:
    shape, _ = resolve_shape(size)
    assert shape.n_params == pytest.approx(PUBLISHED_PARAMS[size], rel=0.003)


def test_shape_from_a_real_folder_counts_exactly(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from tailored.models.load import load_model

    shape, folder = resolve_shape(str(tiny_model_dir))
    model = load_model(folder)
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    trained = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert footprint(shape, TrainSetup(method="lora", options={"lora_r": 4})).trainable == trained


# Error bounds achieved by bench/estimate_accuracy.py (see docs/data-and-estimate.md): within 10%.
PUBLISHED_MEMORY = [
    ("t0-3b", 47.14, TrainSetup(method="full", dtypes="fp32", batch_size=8, seq_len=100, target_len=5, attention="eager")),
    ("t0-3b", 14.4, TrainSetup(method="lora", dtypes="fp32", batch_size=8, seq_len=100, target_len=5, attention="eager",
                               options={"lora_r": 8, "target_modules": "q_proj,v_proj"})),
    ("llama-3.1-8b", 16.2, TrainSetup(method="lora", dtypes="bf16", batch_size=2, seq_len=2048, gradient_checkpointing=True,
                                      chunked_loss=True,
                                      options={"lora_r": 8, "target_modules": "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"})),
    ("llama-3.1-8b", 7.4, TrainSetup(method="qlora", dtypes="bf16", batch_size=2, seq_len=2048, gradient_checkpointing=True,
                                     chunked_loss=True, options={"lora_r": 8})),
]


@pytest.mark.parametrize("preset,gib,setup", PUBLISHED_MEMORY)
def test_memory_matches_published_figures(preset: str, gib: float, setup: TrainSetup) -> None:
    est = estimate_memory(PRESETS[preset], setup)
    assert est.tensors / GIB == pytest.approx(gib, rel=0.10)


def test_memory_moves_the_right_way() -> None:
    shape = PRESETS["llama-2-7b"]
    base = TrainSetup(method="full", dtypes="bf16", batch_size=4, seq_len=2048)
    full, lora, qlora = (estimate_memory(shape, TrainSetup(**{**base.__dict__, "method": m})).total for m in ("full", "lora", "qlora"))
    assert full > lora > qlora
    ckpt = estimate_memory(shape, TrainSetup(**{**base.__dict__, "gradient_checkpointing": True}))
    assert ckpt.activations < estimate_memory(shape, base).activations / 5
    one = estimate_memory(shape, base)
    eight = estimate_memory(shape, TrainSetup(**{**base.__dict__, "devices": 8, "sharding": "fsdp"}))
    assert eight.optimizer == pytest.approx(one.optimizer / 8) and eight.gradients == pytest.approx(one.gradients / 8)
    assert eight.activations == one.activations  # activations are never sharded
    zero1 = estimate_memory(shape, TrainSetup(**{**base.__dict__, "devices": 8, "sharding": "zero1"}))
    assert zero1.gradients == one.gradients and zero1.optimizer == pytest.approx(one.optimizer / 8)
    # weights+grads+AdamW of a full fine-tune in bf16: 2+2+4 bytes per parameter
    assert (one.weights + one.gradients + one.optimizer) == pytest.approx(8 * shape.n_params)


def test_fits_or_says_what_to_change() -> None:
    big = estimate(model="70b", method="full", device="h100")
    assert big.fits is False and any("qlora" in change for change, _ in big.fixes)
    assert all(total <= 80 * GIB for _, total in big.fixes)
    long = estimate(model="3b", method="lora", device="rtx4090", max_seq_length=2048, micro_batch_tokens=2048)
    assert long.fits is False
    assert "--gradient-checkpointing" in [c for c, _ in long.fixes]
    # 8 examples of 8192 tokens in one forward pass (micro_batch_tokens allows it): only checkpointing plus
    # one example per pass fits
    huge = estimate(model="8b", method="lora", device="a100-80gb", batch_size=8, max_seq_length=8192, micro_batch_tokens=65536)
    assert (huge.memory.setup.batch_size, huge.memory.setup.seq_len) == (8, 8192)
    assert len(huge.fixes) == 1 and huge.fixes[0][0].startswith("--gradient-checkpointing --micro-batch-tokens 8192")
    ok = estimate(model="8b", method="qlora", device="a100-80gb")
    assert ok.fits is True and "FITS" in ok.render()


def test_the_forward_pass_is_sized_as_training_batches() -> None:
    """batch_size is examples per optimizer step (as in train); a forward pass holds at most micro_batch_tokens."""
    default = estimate(model="8b", device="a100-80gb", batch_size=8, max_seq_length=8192)
    assert (default.memory.setup.batch_size, default.memory.setup.seq_len) == (1, 8192)  # 1024 tokens per pass: one example
    short = estimate(model="8b", device="a100-80gb", batch_size=8, max_seq_length=256)
    assert short.memory.setup.batch_size == 4  # 1024 // 256 rows per pass
    spread = estimate(model="8b", device="a100-80gb", batch_size=8, max_seq_length=128, devices=4)
    assert spread.memory.setup.batch_size == 2  # each of 4 devices gets 2 of the step's 8 examples
    packed = estimate(model="8b", device="a100-80gb", batch_size=8, max_seq_length=256, batching="pack")
    assert packed.memory.setup.batch_size == 1
    gpu = estimate(model="8b", device="a100-80gb")  # train's auto precision on CUDA: bf16 autocast over fp32 weights
    assert gpu.memory.setup.dtypes == "mixed" and gpu.memory.weights == pytest.approx(4 * gpu.memory.total_params)


def test_every_suggestion_is_a_train_flag() -> None:
    """Each suggested change parses with the real `tailored train` parser (and changes something there)."""
    import shlex

    from tailored.cli.main import build_parser

    parser = build_parser()
    default = vars(parser.parse_args(["train", "--data", "x.jsonl"]))
    cases = [dict(model="7b", method="full", device="rtx4090", precision="fp32", batch_size=8, max_seq_length=2048,
                  micro_batch_tokens=16384),
             dict(model="70b", method="full", device="h100"),
             dict(model="3b", method="dora", device="rtx4090", max_seq_length=2048, micro_batch_tokens=2048),
             dict(model="8b", method="lora", device="a100-80gb", batch_size=8, max_seq_length=8192, micro_batch_tokens=65536)]
    labels = set()
    for kw in cases:
        est = estimate(**kw)
        assert est.fits is False and est.fixes, kw
        labels |= {label.split(" (")[0] for label, _ in est.fixes}
    for label in sorted(labels):
        args = vars(parser.parse_args(["train", "--data", "x.jsonl", *shlex.split(label)]))
        assert args != default, label
    assert any("--method qlora" in label for label in labels) and any("--micro-batch-tokens" in label for label in labels)
    assert not any("optimizer" in label or "--batch-size" in label for label in labels)


def test_tokens_time_and_money(tiny_model_dir: Path, chat_file: Path, tmp_path: Path) -> None:
    from tailored.data.readers import read_records
    from tailored.data.tokenize import encode_example
    from tailored.models.load import load_tokenizer

    est = estimate(model=str(tiny_model_dir), data=chat_file, device="a100-80gb", epochs=3, batch_size=4, max_seq_length=512)
    tok = load_tokenizer(tiny_model_dir)
    lengths = [len(encode_example(tok, ex)) for ex in read_records(chat_file).examples]
    assert est.data.tokens == sum(lengths) and est.data.examples == 48
    assert est.data.padded_tokens >= est.data.tokens
    assert est.memory.setup.seq_len == max(lengths)  # the peak batch is the longest example
    assert est.seconds == pytest.approx(est.flops / (312e12 * 0.35))
    hours = est.seconds / 3600
    assert est.money[f"a100-80gb ({hours:.2f} device-hours)"] == pytest.approx(round(hours * 1.79, 2))
    assert est.money["hosted openai/gpt-4o-mini"] == pytest.approx(round(sum(lengths) * 3 / 1e6 * 3.0, 2))
    prices = tmp_path / "p.yaml"
    prices.write_text("prices_date: '2030-01-01'\ndevices:\n  mygpu: {memory_gib: 10, tflops: 100, usd_per_hour: 2}\n"
                      "hosted:\n  openai/gpt-4o-mini: {usd_per_million_training_tokens: 1000}\n")
    mine = estimate(model=str(tiny_model_dir), data=chat_file, device="mygpu", epochs=3, prices=prices, utilisation=0.5)
    assert mine.seconds == pytest.approx(mine.flops / 50e12) and mine.prices_date == "2030-01-01"
    assert mine.money["hosted openai/gpt-4o-mini"] == pytest.approx(round(sum(lengths) * 3 / 1e6 * 1000, 2))


def test_cpu_calibrates_on_the_model(tiny_model_dir: Path, chat_file: Path) -> None:
    est = estimate(model=str(tiny_model_dir), data=chat_file, device="cpu", epochs=1)
    assert est.throughput > 0 and "measured" in est.throughput_source and est.seconds > 0
    assert est.fits is True and est.capacity_bytes > est.memory.total


def test_cli_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--model", "13b", "--gpu", "a100-40gb", "--method", "lora", "--batch-size", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == PRESETS["llama-2-13b"].n_params and out["fits"] is False and out["fixes"]
    assert out["settings"]["batch_size"] == 4 and "data" not in out["settings"]
    assert main(["estimate", "--model", "13b", "--gpu", "nope"]) != 0
    assert "not in the device table" in capsys.readouterr().err
    assert main(["estimate", "--method", "lorra"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'lora'" in err and "Traceback" not in err


def test_estimate_takes_train_settings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Same flags, names and meanings as `tailored train`, method options included; the same YAML too."""
    from tailored.cli.main import build_parser

    flags = ["--model", "8b", "--method", "adapter", "--bottleneck-size", "8", "--adapter-placement", "both",
             "--batch-size", "8", "--micro-batch-tokens", "2048", "--max-seq-length", "512", "--precision", "fp16",
             "--gradient-checkpointing", "--epochs", "2", "--validation", "none", "--early-stopping-patience", "3"]
    parser = build_parser()
    train, est = (parser.parse_args([cmd, "--data", "x.jsonl", *flags]) for cmd in ("train", "estimate"))
    for name in ("model", "method", "bottleneck_size", "adapter_placement", "batch_size", "micro_batch_tokens",
                 "max_seq_length", "precision", "gradient_checkpointing", "epochs", "validation", "early_stopping_patience"):
        assert getattr(train, name) == getattr(est, name), name
    assert main(["estimate", *flags, "--gpu", "h100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    shape = PRESETS["llama-3.1-8b"]
    assert out["memory"]["trainable_params"] == shape.layers * 2 * (2 * shape.hidden * 8 + 8 + shape.hidden)
    assert out["memory"]["setup"]["batch_size"] == 4 and out["memory"]["setup"]["dtypes"] == "mixed"
    config = tmp_path / "run.yaml"
    config.write_text("model: 8b\nmethod: lora\nlora_r: 4\ntarget_modules: q_proj,v_proj\n")
    assert main(["estimate", "--config", str(config), "--gpu", "h100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["memory"]["trainable_params"] == shape.layers * 4 * ((shape.hidden + shape.q_dim) + (shape.hidden + shape.kv_dim))
    assert main(["estimate", "--precision", "mixed"]) == 2  # train's choices only: auto, fp32, bf16, fp16
    assert "precision" in capsys.readouterr().err
    for bad in (["--optimizer", "adamw8bit"], ["--lora-targets", "q_proj"]):  # train has no such settings
        with pytest.raises(SystemExit):
            parser.parse_args(["estimate", *bad])


@pytest.mark.slow
def test_cpu_memory_and_time_against_measured_steps(smollm2_dir: Path) -> None:
    """Two real runs of the embedded model: the estimate's peak RSS and its time prediction hold."""
    from tailored.estimate.calibrate import measure_in_subprocess, train_flops_per_token

    shape, _ = resolve_shape(str(smollm2_dir))
    from tailored.estimate.report import fit_step_time

    points = []
    for seq in (32, 128):
        r = measure_in_subprocess(smollm2_dir, method="lora", batch_size=1, seq_len=seq, steps=4)
        points.append((train_flops_per_token(shape, seq) * seq, r["cpu_seconds_per_step"]))
    run = measure_in_subprocess(smollm2_dir, method="lora", batch_size=2, seq_len=128, steps=4)
    est = cpu_memory(shape, TrainSetup(method="lora", batch_size=2, seq_len=128))
    assert est.total == pytest.approx(run["peak_rss"], rel=0.12)  # bench: held-out LoRA runs without checkpointing within ±3%
    rate, fixed = fit_step_time(points)
    predicted = fixed + train_flops_per_token(shape, 128) * 256 / rate
    assert predicted == pytest.approx(run["cpu_seconds_per_step"], rel=0.35)  # CPU time: robust to a busy machine


def test_auto_epochs_follow_the_validation_guard(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The estimate resolves ``auto`` epochs as training will: more for a small set only when validation and early
    stopping guard the run (held out automatically from 60 examples on, or given), OpenAI's 3 otherwise."""
    from tailored.testing.tiny import write_chat_dataset

    data = write_chat_dataset(tmp_path / "train.jsonl", n=100)
    small = write_chat_dataset(tmp_path / "small.jsonl", n=48)
    common = dict(model=str(tiny_model_dir), device="a100-80gb", max_seq_length=512)
    assert estimate(data=data, **common).data.epochs == 5  # 100 examples, validation: auto, patience auto
    assert estimate(data=data, early_stopping_patience=0, **common).data.epochs == 3
    assert estimate(data=data, validation="none", **common).data.epochs == 3
    assert estimate(data=small, **common).data.epochs == 3  # under 60: nothing is held out
    assert estimate(data=small, validation=str(small), **common).data.epochs == 5


def test_the_estimate_counts_the_steps_training_takes_after_the_auto_holdout(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``validation: auto`` trains on what it does not hold out: the estimate plans the same steps over the same
    examples as the run (it once counted the held-out ones too: 39 steps planned for a run of 30)."""
    import tailored
    from tailored.testing.tiny import write_chat_dataset

    data = write_chat_dataset(tmp_path / "train.jsonl", n=100)
    settings = dict(model=str(tiny_model_dir), batch_size=8, early_stopping_patience=0)
    planned = estimate(data=data, device="a100-80gb", max_seq_length=512, **settings).data
    run = tailored.train(data=str(data), output=str(tmp_path / "run"), threads=1, red_flags="off", **settings)
    assert planned.examples == run.manifest.data.train.used == 80 and planned.held_out == 20  # of 100
    assert planned.steps == run.metrics["steps"] == 30  # 3 epochs of ceil(80 / 8)


def test_hosted_prices_bill_the_whole_file_for_the_services_own_epochs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A hosted fine-tune trains on every example of the file (validation is a file of its own) for OpenAI's auto
    epochs; the estimate once billed Tailored's plan instead: 80 of 100 examples for 5 guarded epochs, not 100 for 3."""
    from tailored.data.readers import read_records
    from tailored.data.tokenize import encode_example
    from tailored.models.load import load_tokenizer
    from tailored.testing.tiny import write_chat_dataset

    data = write_chat_dataset(tmp_path / "train.jsonl", n=100)
    est = estimate(model=str(tiny_model_dir), data=data, device="a100-80gb", max_seq_length=512)
    assert est.data.examples == 80 and est.data.held_out == 20 and est.epochs == 5  # Tailored trains 80, 5 epochs
    tok = load_tokenizer(tiny_model_dir)
    every = sum(len(encode_example(tok, ex)) for ex in read_records(data).examples)
    assert est.money["hosted openai/gpt-4o-mini"] == pytest.approx(round(every * 3 / 1e6 * 3.0, 2))  # 3: OpenAI's rule
    assert est.data.file_tokens == every > est.data.tokens
    assert any("all 100 examples for 3 epochs (OpenAI's auto rule)" in n for n in est.notes)


def test_hosted_tokens_of_held_out_preference_pairs_count_both_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    """DPO pairs held out by validation: auto are billed by the hosted route like the trained ones (chosen and
    rejected tokens); an explicit epochs setting is the hosted one too."""
    import json

    rows = [{"input": {"messages": [{"role": "user", "content": f"say {w} twice please"}]},
             "preferred_output": [{"role": "assistant", "content": f"{w} {w}"}],
             "non_preferred_output": [{"role": "assistant", "content": f"{w} only, and a longer answer than that"}]}
            for w in [f"w{i}" for i in range(100)]]
    data = tmp_path / "pref.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    auto = estimate(model=str(tiny_model_dir), data=data, device="a100-80gb", method="dpo", epochs=2).data
    every = estimate(model=str(tiny_model_dir), data=data, device="a100-80gb", method="dpo", epochs=2,
                     validation="none").data
    assert auto.held_out == 20 and auto.file_examples == every.examples == 100
    assert auto.file_tokens == every.tokens  # the same whole file, whatever validation training uses
    est = estimate(model=str(tiny_model_dir), data=data, device="a100-80gb", method="dpo", epochs=2)
    assert est.money["hosted openai/gpt-4o-mini"] == pytest.approx(round(every.tokens * 2 / 1e6 * 3.0, 2))


def test_an_explicit_patience_without_validation_does_not_guard_the_epochs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Training guards its auto epochs only with validation data and early stopping; the estimate once took
    `--validation none --early-stopping-patience 3` for a guarded run (5 epochs of 100 examples; training runs 3)."""
    import tailored
    from tailored.testing.tiny import write_chat_dataset

    data = write_chat_dataset(tmp_path / "train.jsonl", n=100)
    settings = dict(model=str(tiny_model_dir), batch_size=20, validation="none", early_stopping_patience=3)
    planned = estimate(data=data, device="a100-80gb", max_seq_length=512, **settings).data
    run = tailored.train(data=str(data), output=str(tmp_path / "run"), threads=1, red_flags="off", **settings)
    assert planned.epochs == 3 and planned.steps == run.metrics["steps"] == 15  # 3 epochs of 100 / 20
