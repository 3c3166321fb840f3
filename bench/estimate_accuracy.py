"""How accurate is `tailored estimate`?  Memory against published figures and against runs measured
here; time against measured steps. Prints every comparison and its error.

Published figures (GPU allocator peaks; the settings are the ones the sources state):
  - PEFT README, bigscience/T0_3B on one A100 80GB (examples/conditional_generation/
    peft_lora_seq2seq_accelerate_ds_zero3_offload.py): fp32, AdamW, batch 8, LoRA r=8 on q,v
    (dropout 0.1), eager attention, tweets padded to the longest of the batch. The peak batch length
    is not stated: we take 100 input tokens (a 280-character tweet) and 5 target tokens.
    Full fine-tune 47.14 GB, LoRA 14.4 GB (MiB/1024, i.e. GiB).
  - torchtune README, Llama 3.1 8B on one RTX 4090: bf16, batch 2, packed to 2048 tokens, activation
    checkpointing, chunked cross-entropy, torch.compile; LoRA r=8 on q,v,output + MLP 16.2 GiB,
    QLoRA r=8 on q,k,v,output + MLP 7.4 GiB (configs llama3_1/8B_{lora,qlora}_single_device.yaml).
Measured here: peak RSS (VmHWM after loading) and seconds per step of real training steps of the
embedded SmolLM2-135M (fp32, AdamW, LoRA r=16 all-linear or full), 1 thread, random tokens.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/estimate_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tailored.estimate.calibrate import measure_in_subprocess, train_flops_per_token  # noqa: E402
from tailored.estimate.memory import GIB, TrainSetup, estimate_memory  # noqa: E402
from tailored.estimate.report import cpu_memory  # noqa: E402
from tailored.estimate.shapes import resolve_shape  # noqa: E402
from tailored.models.shapes import PRESETS  # noqa: E402

PUBLISHED = [
    ("PEFT T0_3B full, A100", "t0-3b", 47.14, TrainSetup(method="full", dtypes="fp32", batch_size=8, seq_len=100,
                                                           target_len=5, attention="eager")),
    ("PEFT T0_3B LoRA, A100", "t0-3b", 14.4, TrainSetup(method="lora", dtypes="fp32", batch_size=8, seq_len=100, target_len=5,
                                                          attention="eager", options={"lora_r": 8, "target_modules": "q_proj,v_proj"})),
    ("torchtune 8B LoRA, 4090", "llama-3.1-8b", 16.2, TrainSetup(
        method="lora", dtypes="bf16", batch_size=2, seq_len=2048, gradient_checkpointing=True, chunked_loss=True,
        options={"lora_r": 8, "target_modules": "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"})),
    ("torchtune 8B QLoRA, 4090", "llama-3.1-8b", 7.4, TrainSetup(
        method="qlora", dtypes="bf16", batch_size=2, seq_len=2048, gradient_checkpointing=True, chunked_loss=True,
        options={"lora_r": 8, "target_modules": "all-linear"})),
]

# (method, batch, seq, checkpointing, used to fit the CPU memory constants?, used to calibrate the speed?)
MEASURED = [
    ("lora", 1, 32, False, False, True), ("lora", 1, 128, False, False, True), ("full", 1, 32, False, False, True),
    ("full", 1, 128, False, False, True),
    ("lora", 1, 64, False, True, False), ("lora", 4, 256, False, True, False), ("full", 1, 64, False, True, False),
    ("lora", 1, 256, False, False, False), ("lora", 4, 64, False, False, False), ("lora", 2, 128, False, False, False),
    ("lora", 4, 256, True, False, False), ("full", 2, 128, False, False, False),
]
QUICK = [MEASURED[0], MEASURED[1], MEASURED[9]]


def published() -> list[float]:
    print("== memory vs published figures (GiB, allocator peak) ==")
    print(f"{'case':28} {'published':>9} {'estimate':>9} {'error':>7}   breakdown (weights/grads/optim/activ/logits)")
    errors = []
    for label, preset, figure, setup in PUBLISHED:
        est = estimate_memory(PRESETS[preset], setup)
        err = est.tensors / GIB / figure - 1
        errors.append(err)
        parts = "/".join(f"{getattr(est, k) / GIB:.2f}" for k in ("weights", "gradients", "optimizer", "activations", "logits"))
        print(f"{label:28} {figure:9.2f} {est.tensors / GIB:9.2f} {err:+7.1%}   {parts}")
    return errors


def measured(configs: list[tuple]) -> tuple[list[float], list[float]]:
    shape, folder = resolve_shape("smollm2")
    print("\n== memory and time vs runs measured here (SmolLM2-135M, fp32, 1 thread) ==")
    print(f"{'method':6} {'b':>2} {'seq':>4} {'ckpt':>5} {'fit?':>5} {'peak RSS':>9} {'estimate':>9} {'error':>7}"
          f" {'cpu s':>7} {'predicted':>9} {'error':>7}")
    from tailored.estimate.report import fit_step_time

    mem_err, time_err, calib = [], [], {}
    for method, b, s, ckpt, fitted, calibrates in configs:
        r = measure_in_subprocess(folder, method=method, batch_size=b, seq_len=s, steps=2, gradient_checkpointing=ckpt)
        est = cpu_memory(shape, TrainSetup(method=method, batch_size=b, seq_len=s, gradient_checkpointing=ckpt))
        m_err = est.total / r["peak_rss"] - 1
        flops = train_flops_per_token(shape, s, trains_base=method == "full", gradient_checkpointing=ckpt) * b * s
        if calibrates:  # two sizes per method calibrate FLOP/s and the fixed cost per step; the rest is predicted
            calib.setdefault(method, []).append((flops, r["cpu_seconds_per_step"]))
            predicted, t_err, tag = r["cpu_seconds_per_step"], None, "calib."
        else:
            rate, fixed = fit_step_time(calib[method])
            predicted = fixed + flops / rate
            t_err = predicted / r["cpu_seconds_per_step"] - 1
            tag = f"{t_err:+7.1%}"
            time_err.append(t_err)
        if not fitted:
            mem_err.append(m_err)
        print(f"{method:6} {b:2d} {s:4d} {str(ckpt):>5} {'yes' if fitted else 'no':>5} {r['peak_rss'] / GIB:9.3f} "
              f"{est.total / GIB:9.3f} {m_err:+7.1%} {r['cpu_seconds_per_step']:7.2f} {predicted:9.2f} {tag:>7}"
              f"   (wall {r['seconds_per_step']:.2f} s)")
    print(f"\nprocess before loading (runtime): {r['start_rss'] / GIB:.3f} GiB; calibrated: "
          + ", ".join(f"{k} {fit_step_time(v)[0] / 1e9:.1f} GFLOP/s + {fit_step_time(v)[1]:.2f} s/step" for k, v in calib.items()))
    return mem_err, time_err


def loop_check() -> float | None:
    """A real `tailored train` run (8 LoRA steps on 32 banking77 examples) against the estimate, in CPU seconds."""
    import tempfile
    import time

    from tailored.estimate.report import estimate
    from tailored.train.run import train

    src = ROOT.parent / "shared" / "data" / "banking77" / "train.jsonl"
    if not src.is_file():
        print("\n(loop check skipped: ../shared/data is absent)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "b32.jsonl"
        data.write_text("".join(src.read_text().splitlines(keepends=True)[:32]))
        c0, w0 = time.process_time(), time.perf_counter()
        train(data=str(data), model="smollm2", method="lora", epochs=1, batch_size=4, max_seq_length=256,
              output=str(Path(tmp) / "run"), threads=1, red_flags="off")
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        est = estimate(data=data, model="smollm2", method="lora", epochs=1, batch_size=4, max_seq_length=256)
    err = est.seconds / cpu - 1
    print(f"\n== the real training loop ==\ntailored train, 8 LoRA steps (32 examples, batch 4): {cpu:.1f} CPU s "
          f"(wall {wall:.1f} s; includes loading the model and saving the run); estimate {est.seconds:.1f} s ({err:+.1%})")
    return err


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 measured runs instead of 12")
    args = parser.parse_args()
    from tailored.cli.common import quiet

    quiet()
    pub = published()
    mem, tim = measured(QUICK if args.quick else MEASURED)
    loop = loop_check()
    print("\n== summary ==")
    print(f"published figures: max |error| {max(abs(e) for e in pub):.1%}")
    if mem:
        print(f"measured here, held-out runs: memory max |error| {max(abs(e) for e in mem):.1%}")
    if tim:
        print(f"measured here: time (CPU seconds per step) max |error| {max(abs(e) for e in tim):.1%}")
    if loop is not None:
        print(f"real training loop: time error {loop:+.1%}")


if __name__ == "__main__":
    main()
