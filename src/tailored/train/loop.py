"""The training loop, written once for every method and for one or many processes.

Per optimizer step: the step's examples are split over processes and into micro-batches; every
micro-batch's summed token loss is divided by the number of labelled tokens in the *whole* step
(all micro-batches, all processes), so gradient accumulation and data parallelism give exactly the
gradient of one big batch. ``accelerator`` is the run's :class:`~tailored.train.strategy.Engine` (DDP,
FSDP2 or DeepSpeed ZeRO, all behind the same calls); this file never branches on a method's or a
strategy's name.

A loss or gradient that is not finite (NaN, inf) stops the run before the optimizer step, with the
step and the last checkpoint (:class:`TrainingDiverged`); a full or read-only disk stops it with
the path and the last good checkpoint (a :class:`~tailored.train.checkpoint.DiskError`).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tailored.config.files import atomic_folder
from tailored.config.schema import TrainConfig
from tailored.data.batching import epoch_steps, micro_batches, shard
from tailored.data.tokenize import Encoded
from tailored.errors import TailoredError
from tailored.train.checkpoint import DiskError, list_checkpoints, prune_checkpoints, save_checkpoint, writing
from tailored.train.forward import token_loss
from tailored.train.hparams import Resolved
from tailored.train.progress import Progress


class TrainingDiverged(TailoredError):
    """The loss (or the gradient) stopped being a finite number: the run was stopped, not trained on."""


@dataclass
class LoopResult:
    steps: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    initial_val_loss: float | None = None
    interrupted: bool = False
    checkpointed: bool = False  # an interrupted run saved a checkpoint at its last completed step
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    real_tokens: int = 0


def _sum(accelerator: Any, *values: float) -> list[float]:
    """Sum numbers over processes (no accelerator: one process)."""
    if accelerator is None:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return t.tolist()


@dataclass
class HeldOutLoss:
    loss: float  # mean token loss (the objective's mean loss with one)
    token_accuracy: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, rows: list[Encoded], *, pad_id: int, micro_batch_tokens: int,
                  accelerator: Any = None, objective: Any = None) -> HeldOutLoss:
    """Mean loss and token accuracy over held-out ``rows``, in eval mode (the model's mode is restored).

    With ``accelerator`` the rows are split across processes and the sums reduced; without, one process
    on the model's device. ``objective``: see :func:`train_loop`.
    """
    batches = objective.batches if objective is not None else micro_batches
    loss_fn = objective.loss if objective is not None else token_loss
    if accelerator is None:
        rank, world, device = 0, 1, next(model.parameters()).device
    else:
        rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    was_training = model.training
    model.eval()
    loss = tokens = correct = 0.0
    for mb in batches(rows[rank::world], pad_id=pad_id, micro_batch_tokens=micro_batch_tokens):
        out = loss_fn(model, mb, device=device)
        loss += float(out.loss_sum)
        tokens += out.n_tokens
        correct += out.n_correct
    loss, tokens, correct = _sum(accelerator, loss, tokens, correct)
    model.train(was_training)
    return HeldOutLoss(loss / max(tokens, 1), correct / max(tokens, 1), int(tokens))


def lr_lambda(hp: Resolved, schedule: str) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < hp.warmup_steps:
            return (step + 1) / (hp.warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - hp.warmup_steps) / max(1, hp.total_steps - hp.warmup_steps)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def train_loop(
    *,
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train_rows: list[Encoded],
    val_rows: list[Encoded],
    cfg: TrainConfig,
    hp: Resolved,
    run_dir: Path,
    pad_id: int,
    save_weights: Callable[[Path, Any], None],
    start: dict[str, Any] | None = None,
    objective: Any = None,
) -> LoopResult:
    """Run optimizer steps from ``start`` (a restored trainer state) up to ``hp.total_steps``.

    ``save_weights(path, state)`` writes the method's weights (``state``: the full weights gathered from
    shards, or None). ``objective`` (a method's optional :class:`tailored.methods.objective.Objective`, e.g. DPO's) replaces
    the token loss: its ``batches`` and ``loss`` are used instead of ``micro_batches`` and ``token_loss``.
    """
    batches = objective.batches if objective is not None else micro_batches
    loss_fn = objective.loss if objective is not None else token_loss
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    lengths = [len(r) for r in train_rows]
    state = dict(start or {})
    step = int(state.get("step", 0))
    best = state.get("best_val_loss")
    best_step = state.get("best_step")
    bad_evals = int(state.get("bad_evals", 0))
    metrics_path = run_dir / "metrics.jsonl"
    result = LoopResult(step, None, None, best, best_step)
    progress = Progress("train", hp.total_steps, start=step, unit="step", enabled=main)
    t0 = time.time()

    def log(record: dict[str, Any]) -> None:
        result.history.append(record)
        if main:
            with writing(metrics_path), open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def diverged(what: str, value: float, at_step: int) -> TrainingDiverged:
        progress.close()
        ckpts = list_checkpoints(run_dir)
        last = (f"the last checkpoint, {ckpts[-1]}, is from step {int(ckpts[-1].name.split('-')[1])}" if ckpts
                else "no checkpoint was saved before it")
        before = f" (last finite train loss {result.train_loss:.4f} at step {step})" if result.train_loss is not None else ""
        mult = hp.learning_rate_multiplier
        return TrainingDiverged(
            f"training diverged: the {what} is {value} at step {at_step}{before}; the run was stopped there and "
            f"nothing of step {at_step} was kept; {last}",
            hint=f"the learning rate is too high for this run: start a new run (another --output) with a lower "
                 f"learning_rate_multiplier (now {mult:g}; try {mult / 10:g} or less, or auto)"
                 + ("" if cfg.max_grad_norm else " and max_grad_norm 1.0")
                 + ("; a loss that is not finite from step 1 on points at the data or the model instead" if at_step == 1 else ""))

    def checkpoint(at_step: int) -> None:
        accelerator.wait_for_everyone()
        # every process takes part in gathering sharded weights and optimizer states; the main one writes
        weights = accelerator.full_state_dict(model)
        optimizer_state = accelerator.optimizer_state(optimizer)
        shards = run_dir / "checkpoints" / f".step-{at_step:06d}.tmp-shards"
        if accelerator.sharded_optimizer:
            with writing(shards):
                accelerator.save_optimizer_shard(shards)
            accelerator.wait_for_everyone()
        if main:
            save_checkpoint(
                run_dir / "checkpoints" / f"step-{at_step:06d}",
                save_weights=lambda path: save_weights(path, weights),
                optimizer_state=optimizer_state,
                scheduler=scheduler,
                state={"step": at_step, "best_val_loss": best, "best_step": best_step, "bad_evals": bad_evals,
                       "initial_val_loss": result.initial_val_loss if result.initial_val_loss is not None
                       else state.get("initial_val_loss"), "strategy": accelerator.strategy, "world_size": world},
                shards=shards if accelerator.sharded_optimizer else None,
            )
            prune_checkpoints(run_dir, cfg.keep_checkpoints)
        accelerator.wait_for_everyone()

    def validate() -> tuple[float, float]:
        held = evaluate_loss(model, val_rows, accelerator=accelerator, pad_id=pad_id,
                             micro_batch_tokens=cfg.micro_batch_tokens, objective=objective)
        return held.loss, held.token_accuracy

    if val_rows and step == 0:  # the "before" of every before/after comparison
        val_loss, val_acc = validate()
        result.initial_val_loss = val_loss
        log({"step": 0, "epoch": 0.0, "split": "validation", "loss": round(val_loss, 5), "token_accuracy": round(val_acc, 4),
             "best": False})
        progress.note(f"step 0: validation loss {val_loss:.4f} (before training)")
    model.train()
    stop = _StopRequest()
    try:
        while step < hp.total_steps:
            epoch, index = divmod(step, hp.steps_per_epoch)
            plan = epoch_steps(lengths, hp.batch_size, cfg.seed, epoch, min_size=world)
            mine = [train_rows[i] for i in shard(plan[index], lengths, rank, world)]
            mbs = batches(mine, pad_id=pad_id, micro_batch_tokens=cfg.micro_batch_tokens,
                                strategy=cfg.batching, max_seq_length=cfg.max_seq_length)
            n_global, = _sum(accelerator, sum(mb.n_labels for mb in mbs))
            loss_total = correct = real = 0.0
            for i, mb in enumerate(mbs):
                sync = i == len(mbs) - 1
                ctx = accelerator.no_sync(model) if not sync and world > 1 else nullcontext()
                with ctx:
                    out = loss_fn(model, mb, device=accelerator.device)
                    accelerator.backward(out.loss_sum * (world / max(n_global, 1.0)))
                loss_total += float(out.loss_sum.detach())
                correct += out.n_correct
                real += mb.n_real_tokens
            grad_norm = None
            if cfg.max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
            # every process learns whether any of them was asked to stop, so all stop after the same step
            loss_total, correct, real, stopping = _sum(accelerator, loss_total, correct, real, float(stop.requested))
            train_loss = loss_total / max(n_global, 1.0)
            # before the optimizer step: a non-finite loss or gradient would make every weight NaN
            if not math.isfinite(train_loss):
                raise diverged("train loss", train_loss, step + 1)
            if grad_norm is not None and not math.isfinite(float(grad_norm)):
                raise diverged("gradient norm", float(grad_norm), step + 1)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            result.real_tokens += int(real)
            result.train_loss = train_loss
            tokens_per_s = result.real_tokens / max(time.time() - t0, 1e-9)
            progress.update(step, info=f"loss {train_loss:.4f} · {tokens_per_s:,.0f} tok/s")
            if step % cfg.log_every == 0 or step == hp.total_steps:
                log({"step": step, "epoch": round(step / hp.steps_per_epoch, 3), "split": "train", "loss": round(train_loss, 5),
                     "token_accuracy": round(correct / max(n_global, 1.0), 4), "learning_rate": scheduler.get_last_lr()[0],
                     "tokens_per_s": round(tokens_per_s, 1), "real_tokens": int(real), "elapsed_s": round(time.time() - t0, 2)})
            if val_rows and hp.validates_at(step):
                val_loss, val_acc = validate()
                if not math.isfinite(val_loss):
                    raise diverged("validation loss", val_loss, step)
                result.val_loss = val_loss
                improved = best is None or val_loss < best - 1e-6
                if improved:
                    best, best_step, bad_evals = val_loss, step, 0
                    weights = accelerator.full_state_dict(model)  # every process: sharded weights are gathered
                    if main:
                        with writing(run_dir / "best"), atomic_folder(run_dir / "best") as tmp:
                            save_weights(tmp, weights)
                else:
                    bad_evals += 1
                log({"step": step, "epoch": round(step / hp.steps_per_epoch, 3), "split": "validation",
                     "loss": round(val_loss, 5), "token_accuracy": round(val_acc, 4), "best": improved})
                progress.note(f"step {step}: validation loss {val_loss:.4f}" + (" (best)" if improved else ""))
                if cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience:
                    result.stopped_early = True
                    progress.note(f"early stopping: no improvement in {bad_evals} validations; best was step {best_step}")
                    break
            if step % hp.save_every == 0 and step < hp.total_steps:
                checkpoint(step)
            if stopping:
                result.interrupted = True
                progress.close()
                checkpoint(step)
                result.checkpointed = True
                break
    except KeyboardInterrupt:  # a second Ctrl-C: leave at once; the newest periodic checkpoint stays
        result.interrupted = True
    except DiskError as exc:
        progress.close()
        ckpts = list_checkpoints(run_dir)
        good = (f"the last good checkpoint, {ckpts[-1]}, is intact" if ckpts
                else "no checkpoint was saved yet (resuming starts again from step 0)")
        raise DiskError(exc.path, f"{exc.problem}; training stopped after step {step}, {good}",
                        then=f"continue with: tailored train --resume --output {run_dir}") from None
    finally:
        stop.restore()
    progress.close()
    result.steps, result.best_val_loss, result.best_step = step, best, best_step
    result.seconds = time.time() - t0
    return result


class _StopRequest:
    """Ctrl-C (SIGINT) asks the loop to stop after the current step and save a checkpoint there, so the
    saved state is always a step boundary; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None
