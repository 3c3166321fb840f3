"""The step-level engine: continuous batching over one model, chunked prefill, prefix cache, per-row adapters.

Rows (one per choice of a request) are added at any time. Each :meth:`StepEngine.step`:

1. drops rows whose client left, and admits waiting rows while the batch has room (``max_rows`` rows,
   ``max_tokens`` of prompt + answer in all), picking fairly between adapters: the adapter with the
   fewest rows in the batch goes first, the oldest row among equals;
2. decodes one token for every running row (one forward pass, each row with its own adapter);
3. prefills admitted rows in chunks of ``chunk`` tokens, at most ``prefill_budget`` tokens a step while
   other rows are decoding, so a long prompt never stalls everyone's next token for long; one pass
   computes the next chunk of several rows, packed without padding (rows arriving together cost one
   forward pass, not one each); a row's cached prefix blocks (:mod:`tailored.engine.prefix`) are
   skipped, and a block another row of the pass is computing is waited for, not computed twice; a row
   whose prompt is done samples its first token and joins the running batch for the next step.

Rows leave as they finish (stop token, stop string, length), fail, or are cancelled; :func:`run` drives
the steps until every row is done (chat, eval), a server's scheduler thread calls :meth:`step` itself.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from tailored.engine.kv import KV, join, new_cache, pack, select, tensors, unpack
from tailored.engine.lora import BASE, LoraBank
from tailored.engine.prefix import PrefixCache
from tailored.engine.sampling import Row, advance

log = logging.getLogger("tailored.engine")
STAT_KEYS = ("batches", "rows", "max_rows", "mixed_batches", "tokens", "active_rows", "waiting_rows",
             "cancelled_rows", "failed_rows", "prefill_tokens", "prefix_hit_tokens")


@dataclass
class _Seq:
    row: Row
    done: int = 0  # prompt tokens in ``kv``
    kv: KV | None = None  # the row's own KV while it prefills
    looked_up: bool = False
    token: int = 0  # next input token once running
    pos: int = 0  # its position

    @property
    def cost(self) -> int:
        return len(self.row.prompt_ids) + int(self.row.sampling.max_new_tokens or 0)


@dataclass
class StepEngine:
    """Continuous batching for one model (see the module docstring). Not thread-safe: one thread steps it.

    Args:
        model: a causal LM (see :func:`~tailored.engine.kv.engine_problem` for what it must be).
        bank: the LoRA adapters rows may name (``Row.adapter``); None for a model without adapters.
        prefix: the prefix cache (shared between engines: ``namespace`` keeps their blocks apart).
        stats: counters kept up to date (:data:`STAT_KEYS`); a server serves them on ``/v1/stats``.
    """

    model: torch.nn.Module
    bank: LoraBank | None = None
    prefix: PrefixCache | None = None
    namespace: str = ""
    max_rows: int = 16
    max_tokens: int = 32768
    chunk: int = 64
    prefill_budget: int = 256
    stats: dict[str, Any] = field(default_factory=dict)
    waiting: list[_Seq] = field(default_factory=list)
    prefilling: list[_Seq] = field(default_factory=list)
    running: list[_Seq] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in STAT_KEYS:
            self.stats.setdefault(key, 0)
        if self.prefix is not None:
            self.chunk = self.prefix.block  # same boundaries: cached blocks are what a prefill computes
        self.device = next(self.model.parameters()).device
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._mixed = False
        self._reported = (0, 0)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.running)

    def adapters(self) -> set[str]:
        """The adapters of every row not finished (they must stay loaded)."""
        return {s.row.adapter for s in (*self.waiting, *self.prefilling, *self.running)}

    def add(self, rows: list[Row]) -> None:
        self.waiting += [_Seq(r) for r in rows]
        self._report()

    @torch.no_grad()
    def step(self) -> None:
        """One decode step for the running rows and up to ``prefill_budget`` tokens of prefill."""
        self._drop_cancelled()
        self._admit()
        if self.running:
            self._decode()
        if self.prefilling:
            self._prefill()
        self._report()

    def _report(self) -> None:
        """Rows active and waiting, as changes to the shared counters (several engines may share ``stats``)."""
        now = (len(self.prefilling) + len(self.running), len(self.waiting))
        self.stats["active_rows"] += now[0] - self._reported[0]
        self.stats["waiting_rows"] += now[1] - self._reported[1]
        self._reported = now

    def clear(self) -> list[Row]:
        """Drop every row (returned); the engine is empty after."""
        rows = [s.row for s in (*self.waiting, *self.prefilling, *self.running)]
        self.waiting, self.prefilling, self.running = [], [], []
        self._cache = self._mask = None
        self._report()
        return rows

    def fail_all(self, exc: BaseException) -> None:
        """Every row fails with ``exc`` (told to its ``fail``); the engine is empty after."""
        rows = self.clear()
        self.stats["failed_rows"] += len(rows)
        for row in rows:
            _tell(row, exc)

    # --- admission ---------------------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        for queue in (self.waiting, self.prefilling):
            gone = [s for s in queue if s.row.cancelled()]
            if gone:
                queue[:] = [s for s in queue if s not in gone]
                self.stats["cancelled_rows"] += len(gone)

    def _admit(self) -> None:
        active = len(self.prefilling) + len(self.running)
        if not self.waiting or active >= self.max_rows:
            return
        if active == 0:  # a new busy period: what the stats call a batch
            self.stats["batches"] += 1
            self._mixed = False
        counts = collections.Counter(s.row.adapter for s in (*self.prefilling, *self.running))
        tokens = sum(s.cost for s in (*self.prefilling, *self.running))
        while self.waiting and active < self.max_rows:
            best = min(range(len(self.waiting)), key=lambda i: (counts[self.waiting[i].row.adapter], i))
            seq = self.waiting[best]
            if active and tokens + seq.cost > self.max_tokens:
                break
            self.waiting.pop(best)
            self.prefilling.append(seq)
            counts[seq.row.adapter] += 1
            active, tokens = active + 1, tokens + seq.cost
            self.stats["rows"] += 1
        self.stats["max_rows"] = max(self.stats["max_rows"], active)
        if len(counts) > 1 and not self._mixed:
            self._mixed = True
            self.stats["mixed_batches"] += 1

    # --- the forward passes ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _rows_adapters(self, adapters: list[str], lengths: list[int] | None = None) -> Iterator[None]:
        if self.bank is None or all(a == BASE for a in adapters):
            yield
            return
        with self.bank.rows(adapters, lengths):
            yield

    def _namespace(self, adapter: str) -> str:
        version = self.bank.versions.get(adapter, 0) if self.bank is not None else 0
        return f"{self.namespace}/{adapter}@{version}"

    def _prefill(self) -> None:
        """Up to the step's budget of prompt tokens, in passes that each take one chunk from several rows."""
        budget = self.prefill_budget if self.running else 4 * self.prefill_budget
        spent, joined = 0, []
        while spent < budget and self.prefilling:
            group, tokens = self._next_group(budget - spent)
            spent += tokens
            try:
                logits = self._prefill_pass(group)
            except Exception as exc:  # noqa: BLE001 - retried one row at a time: only a row that fails alone fails
                if len(group) == 1:
                    self._failed(group[0], exc)
                    continue
                logits = None
            for i, seq in enumerate(group):
                try:
                    row_logits = logits[i] if logits is not None else self._prefill_pass([seq])[0]
                    if seq.done < len(seq.row.prompt_ids):
                        continue
                    self.prefilling.remove(seq)
                    self.stats["tokens"] += 1
                    token, goes_on = advance(seq.row, row_logits, int(row_logits.argmax()))
                except Exception as exc:  # this row's own forward pass, sampling or emit: it alone fails
                    self._failed(seq, exc)
                    continue
                if goes_on:
                    seq.token, seq.pos = token, len(seq.row.prompt_ids)
                    joined.append(seq)
                else:
                    seq.kv = None
        if joined:
            self._cache, self._mask = join(self._cache, self._mask, [s.kv for s in joined])  # type: ignore[misc]
            for seq in joined:
                seq.kv = None
            self.running += joined

    def _next_group(self, budget: int) -> tuple[list[_Seq], int]:
        """The rows whose next chunk the next prefill pass computes (in order, while ``budget`` tokens last),
        and its tokens.

        With a prefix cache, a row whose next block another row of the pass is computing already (the same
        adapter, the same tokens up to the block's end: a shared system prompt) waits for the next pass
        and looks its prefix up again then, so a shared prefix is computed once, not once per row.
        """
        group, spent, computing = [], 0, set()
        for seq in self.prefilling:
            if group and spent >= budget:
                break
            ids = seq.row.prompt_ids
            if not seq.looked_up and self.prefix is not None:
                seq.looked_up = True
                done, kv = self.prefix.lookup(self._namespace(seq.row.adapter), ids, len(ids) - 1)
                if done > seq.done:
                    self.stats["prefix_hit_tokens"] += done - seq.done
                    seq.done, seq.kv = done, kv
            end = self._chunk_end(seq)
            if self.prefix is not None and end % self.chunk == 0 and end < len(ids):  # a block the cache will keep
                key = (seq.row.adapter, tuple(ids[:end]))
                if key in computing:
                    seq.looked_up = False
                    continue
                computing.add(key)
            group.append(seq)
            spent += end - seq.done
        return group, spent

    def _chunk_end(self, seq: _Seq) -> int:
        """The end of a row's next prefill chunk: chunks end on multiples of ``chunk`` (the prefix cache's blocks)."""
        return min(len(seq.row.prompt_ids), (seq.done // self.chunk + 1) * self.chunk)

    def _prefill_pass(self, group: list[_Seq]) -> torch.Tensor:
        """One forward pass over the next chunk of each row of ``group``; returns each row's last logits.

        One row runs as it is; several are packed into one sequence (:func:`~tailored.engine.kv.pack`: no
        padding, each row sees only its own keys) and each row's own KV is cut back out afterwards.
        """
        ends = [self._chunk_end(seq) for seq in group]
        if len(group) == 1:
            seq, end = group[0], ends[0]
            start, ids = seq.done, seq.row.prompt_ids
            cache = new_cache(seq.kv)
            with self._rows_adapters([seq.row.adapter]):
                out = self.model(input_ids=torch.tensor([ids[start:end]], device=self.device),
                                 attention_mask=torch.ones(1, end, dtype=torch.long, device=self.device),
                                 position_ids=torch.arange(start, end, device=self.device)[None],
                                 cache=cache, use_cache=True, logits_to_keep=1)
            self._prefilled(seq, tensors(cache), end)
            return out.logits[:, -1]
        packed = pack([seq.row.prompt_ids for seq in group], [seq.done for seq in group], ends, [seq.kv for seq in group],
                      dtype=next(self.model.parameters()).dtype, device=self.device)
        cache = new_cache(packed.kv)
        with self._rows_adapters([seq.row.adapter for seq in group], packed.lengths):
            out = self.model(input_ids=packed.input_ids, attention_mask=packed.mask, position_ids=packed.positions,
                             cache=cache, use_cache=True, logits_to_keep=packed.last)
        for seq, kv, end in zip(group, unpack(tensors(cache), packed), ends):
            self._prefilled(seq, kv, end)
        return out.logits[0]

    def _prefilled(self, seq: _Seq, kv: KV, end: int) -> None:
        self.stats["prefill_tokens"] += end - seq.done
        seq.kv, seq.done = kv, end
        if self.prefix is not None:
            self.prefix.store(self._namespace(seq.row.adapter), seq.row.prompt_ids, kv, end)

    def _decode(self) -> None:
        rows = self.running
        mask = torch.cat([self._mask, self._mask.new_ones(len(rows), 1)], dim=1)  # type: ignore[list-item]
        try:
            with self._rows_adapters([s.row.adapter for s in rows]):
                out = self.model(input_ids=torch.tensor([[s.token] for s in rows], device=self.device),
                                 attention_mask=mask, position_ids=torch.tensor([[s.pos] for s in rows], device=self.device),
                                 cache=self._cache, use_cache=True, logits_to_keep=1)
        except Exception as exc:  # the pass every running row shares: they all fail, waiting rows go on
            log.error("a decode step failed", exc_info=exc)
            running, self.running, self._cache, self._mask = self.running, [], None, None
            self.stats["failed_rows"] += len(running)
            for seq in running:
                _tell(seq.row, exc)
            return
        self._mask = mask
        logits = out.logits[:, -1, :]
        greedy = logits.argmax(dim=-1).tolist()  # one call for all rows; sampling rows draw their own
        self.stats["tokens"] += len(rows)
        keep = []
        for i, seq in enumerate(rows):
            if seq.row.cancelled():
                self.stats["cancelled_rows"] += 1
                continue
            try:
                token, goes_on = advance(seq.row, logits[i], greedy[i])
            except Exception as exc:  # noqa: BLE001 - this row's sampling or emit: it alone fails
                self._failed(seq, exc)
                continue
            if goes_on:
                seq.token, seq.pos = token, seq.pos + 1
                keep.append(i)
        if len(keep) < len(rows):
            self.running = [rows[i] for i in keep]
            if self.running:
                self._mask = select(self._cache, mask, keep)
            else:
                self._cache = self._mask = None

    def _failed(self, seq: _Seq, exc: BaseException) -> None:
        self.stats["failed_rows"] += 1
        seq.kv = None
        if seq in self.prefilling:
            self.prefilling.remove(seq)
        if seq.row.fail is None:
            raise exc
        _tell(seq.row, exc)


def run(engine: StepEngine, rows: list[Row], *, progress: Callable[[], None] | None = None) -> None:
    """Add ``rows`` and step until the engine is idle (chat, eval: one caller at a time)."""
    engine.add(rows)
    try:
        while engine.busy:
            engine.step()
            if progress is not None:
                progress()
    except BaseException:
        engine.clear()
        raise


def _tell(row: Row, exc: BaseException) -> None:
    if row.fail is None:
        raise exc
    try:
        row.fail(exc)
    except Exception:
        log.exception("could not report a row's failure")
