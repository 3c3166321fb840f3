"""The data as training will see it: kept examples, steps, and the forward passes training's batching makes.

Nothing here re-implements training's rules: examples are encoded by the method's objective or the
token encoder (same ``max_seq_length`` and ``overlength``), ``auto`` epochs and batch size are resolved
by :func:`tailored.train.hparams.resolve`, and the first epoch's steps are split over the devices and
cut into micro-batches of at most ``micro_batch_tokens`` padded tokens by the same functions the
training loop calls (``epoch_steps``, ``shard``, ``micro_batches`` or the objective's ``batches``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tailored.config.auto import guarded_run
from tailored.config.schema import TrainConfig
from tailored.data.batching import epoch_steps, micro_batches, shard
from tailored.data.readers import read_records
from tailored.data.tokenize import IGNORE, encode_all, encode_example
from tailored.errors import DataError
from tailored.methods.base import Method
from tailored.models.neighbours import encode_with_neighbours
from tailored.train.hparams import resolve
from tailored.train.validation import hold_out


@dataclass
class DataTokens:
    examples: int  # examples training keeps (after max_seq_length/overlength)
    tokens: int  # real tokens per epoch
    padded_tokens: int  # tokens of the forward passes per epoch, padding included, as training batches them
    trained_tokens: int  # tokens that carry a loss
    longest: int  # the widest forward pass (padded width)
    tokenizer: str
    epochs: int  # as training resolves them (auto: from the number of examples)
    batch_size: int  # examples per optimizer step (auto resolved)
    steps: int  # optimizer steps of the whole run
    steps_per_epoch: int
    passes_per_epoch: int  # forward passes (micro-batches) per epoch, all devices together
    peak_pass_tokens: int  # the most padded tokens in one forward pass on one device
    held_out: int = 0  # examples ``validation: auto`` holds out of the file (not in ``examples``)
    file_tokens: int = 0  # real tokens of every kept example, the held-out ones too (what a hosted service bills)
    file_examples: int = 0  # examples kept of the whole file, the held-out ones too
    neighbours: int = 0  # labelled training requests listed in each prompt (tailored.models.neighbours)

    @property
    def run_padded_tokens(self) -> float:
        """Padded tokens over the whole run (the first epoch's batching for every epoch)."""
        return self.padded_tokens * self.steps / self.steps_per_epoch


class DataPlan:
    """A data file read once, planned again for each setting that changes the batching."""

    def __init__(self, path: str | Path, tokenizer: Any, tokenizer_name: str, method: Method, options: BaseModel,
                 format: str = "auto") -> None:
        read = read_records(path, format=format)
        if not read.examples:
            raise DataError(f"--data {path}: no valid examples", hint="run `tailored data check` on it")
        self.path, self.tokenizer, self.tokenizer_name, self.method = Path(path), tokenizer, tokenizer_name, method
        self.examples = read.examples
        self.objective = method.objective(options)  # None: the token loss
        self._full = None if self.objective is not None else [encode_example(tokenizer, ex) for ex in self.examples]
        self._listed: dict[tuple, tuple[int, list[Any]] | None] = {}  # the labelled-neighbours index is built once

    def held_out(self, config: TrainConfig) -> list[int]:
        """Positions of the examples ``validation: auto`` holds out of training (train.validation.hold_out, same seed)."""
        return hold_out(self.examples, seed=config.seed).validation_index if config.validation == "auto" else []

    def rows(self, config: TrainConfig, held_out: list[int]) -> tuple[list[Any], list[Any], int]:
        """(the encoded examples ``config`` trains on: all but ``held_out``, what ``validation: auto`` holds out;
        the same without labelled neighbours; how many neighbours each prompt lists)."""
        held = set(held_out)
        positions = [i for i in range(len(self.examples)) if i not in held]
        rows, stats = self._encode(config, positions)
        if not rows:
            raise DataError(f"--data {self.path}: no example is left with max_seq_length={config.max_seq_length}",
                            hint="raise --max-seq-length or use --overlength truncate")
        key = (str(config.neighbours), config.max_seq_length, config.overlength, tuple(positions))
        if key not in self._listed:  # as training lists them (auto steps aside where training's would)
            examples = [self.examples[i] for i in positions]
            near, listed = encode_with_neighbours(config, examples, [], self._encoder(), self.tokenizer, stats,
                                                  say=lambda _msg: None)
            self._listed[key] = (near.k, listed[0]) if near is not None and listed is not None else None
        k, listed_rows = self._listed[key] or (0, rows)
        return listed_rows, rows, k

    def _encoder(self) -> Any:
        return self.objective.encode if self.objective is not None else encode_all

    def _encode(self, config: TrainConfig, positions: list[int]) -> tuple[list[Any], Any]:
        """The examples at ``positions`` encoded as training encodes them (those too long dropped or truncated)."""
        reuse = {} if self.objective is not None else {"encoded": [self._full[i] for i in positions]}
        return self._encoder()(self.tokenizer, [self.examples[i] for i in positions], max_seq_length=config.max_seq_length,
                               overlength=config.overlength, **reuse)

    def tokens(self, config: TrainConfig, devices: int = 1) -> DataTokens:
        """Counts and the forward passes of ``config`` on ``devices`` processes."""
        held_out = self.held_out(config)
        rows, plain, listed = self.rows(config, held_out)
        hp = resolve(n_examples=len(rows), epochs=config.epochs, batch_size=config.batch_size,
                     learning_rate_multiplier=config.learning_rate_multiplier, base_learning_rate=self.method.base_learning_rate,
                     max_steps=config.max_steps, warmup_ratio=config.warmup_ratio, eval_every=config.eval_every,
                     save_every=config.save_every, world_size=devices, guarded=guarded(config, len(self.examples)))
        batches = functools.partial(self.objective.batches if self.objective is not None else micro_batches,
                                    pad_id=int(self.tokenizer.pad_token_id), micro_batch_tokens=config.micro_batch_tokens,
                                    strategy=config.batching, max_seq_length=config.max_seq_length)
        lengths = [len(r) for r in rows]
        padded = real = trained = passes = peak = widest = 0
        plan = epoch_steps(lengths, hp.batch_size, config.seed, 0, min_size=devices)
        for step in plan:
            for rank in range(devices):
                mine = [rows[i] for i in shard(step, lengths, rank, devices)]
                for mb in batches(mine):
                    n_rows, width = mb.input_ids.shape
                    padded += n_rows * width
                    real += mb.n_real_tokens
                    trained += int((mb.labels[:, 1:] != IGNORE).sum())
                    passes += 1
                    peak, widest = max(peak, n_rows * width), max(widest, width)
        held_rows = self._encode(config, held_out)[0] if held_out else []  # what a hosted service would train on too
        file_tokens = sum(mb.n_real_tokens for mb in batches([*plain, *held_rows]))  # the file as it is, no listing
        return DataTokens(len(rows), real, padded, trained, widest, self.tokenizer_name, hp.epochs, hp.batch_size,
                          hp.total_steps, len(plan), passes, peak, held_out=len(held_out), file_tokens=file_tokens,
                          file_examples=len(rows) + len(held_rows), neighbours=listed)


def guarded(config: TrainConfig, n_examples: int) -> bool:
    """Whether training will have validation data and early stopping (what ``auto`` epochs depend on)."""
    return guarded_run(config.validation, n_examples, config.early_stopping_patience)


def largest_pass(config: TrainConfig, devices: int, tokens: DataTokens | None) -> tuple[int, int]:
    """(rows, padded width) of the largest forward pass on one device: what the memory peak is sized for.

    With data: the widest pass of the plan, and enough rows to hold its most padded tokens. Without:
    ``max_seq_length`` wide, as many rows as ``micro_batch_tokens`` allows (one when packing), at most
    the device's share of an optimizer step.
    """
    if tokens is not None:
        return max(1, math.ceil(tokens.peak_pass_tokens / tokens.longest)), tokens.longest
    width = config.max_seq_length
    if config.batching == "pack":
        return 1, width
    rows = max(1, config.micro_batch_tokens // width)
    if config.batch_size != "auto":
        rows = min(rows, math.ceil(int(config.batch_size) / max(1, devices)))
    return rows, width
