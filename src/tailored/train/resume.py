"""Resuming a checkpoint under a strategy: the same strategy, and for ZeRO the same number of processes.

A checkpoint's weights are always whole (gathered from shards when saving) and go into the model
before the strategy shards it; the optimizer state goes in after: FSDP's is saved whole (keyed by
parameter name, so it loads at any world size), ZeRO's as one partition per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tailored.errors import CheckpointError
from tailored.train.checkpoint import read_state


def check_world(ckpt: Path, engine: Any) -> None:
    """Refuse a resume the checkpoint cannot give: another strategy, or ZeRO partitions of another world size."""
    state = read_state(ckpt)
    was, world = state.get("strategy", "ddp"), state.get("world_size")
    if was != engine.strategy:
        raise CheckpointError(f"{ckpt} was saved under strategy {was}, this run uses {engine.strategy}",
                              hint=f"resume with --strategy {was}")
    if engine.sharded_optimizer and world is not None and world != engine.num_processes:
        raise CheckpointError(f"{ckpt} holds ZeRO optimizer partitions of {world} processes; this run has "
                              f"{engine.num_processes}",
                              hint=f"resume with {world} processes in all (--nproc × --nnodes)")


def load_sharded(engine: Any, optimizer: Any, state: dict[str, Any], ckpt: Path) -> None:
    """The optimizer state of ``ckpt``: the whole one, or this process's ZeRO partition."""
    if engine.sharded_optimizer:
        engine.load_optimizer_shard(ckpt)
    else:
        engine.load_optimizer_state(optimizer, state)
