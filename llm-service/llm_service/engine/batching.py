"""Dynamic (continuous) batching of one loaded model variant.

One worker thread per engine runs the decode loop so the event loop stays responsive. Requests that
arrive while the engine is idle wait up to ``batch_wait_ms`` for company, then prefill together
(left-padded, with an attention mask and per-row positions). While a batch decodes, new requests join
at step boundaries: they are prefilled as their own small batch and their KV cache is concatenated with
the running one (the shorter side left-padded with masked zeros). Rows that finish (eos, stop string,
length, client gone) leave the batch at once; columns that are padding in every remaining row are
trimmed. Each row has its own sampling parameters and random generator.

fp32/fp16 variants give the same greedy tokens batched or alone (tests check it). Dynamic int8
variants quantize activations with ONE scale per tensor, computed over the whole batch, so a row's
logits depend slightly on its batch mates and greedy int8 output can differ between batched and solo
runs (a property of onnxruntime's DynamicQuantizeLinear, not of the padding). Ask for precision fp32
when bit-for-bit reproducibility across load matters.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import AsyncIterator

import numpy as np

from stack_common.errors import Overloaded

from .base import GenerationEvent, GenerationRequest, ModelRunner, TokenLogprob
from .sampling import sample_token
from .tokenizer import IncrementalDecoder, Tokenizer

log = logging.getLogger("llm_service.engine.batching")


class AdmissionGate:
    """The bounded queue shared by every engine: at most ``max_queue`` requests wait for a batch slot."""

    def __init__(self, max_queue: int, retry_after_s: int = 1, metrics=None) -> None:
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.waiting = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.waiting >= self.max_queue:
                if self.metrics:
                    self.metrics.request_failure.labels("overloaded").inc()
                raise Overloaded(f"server busy: {self.waiting} requests already wait for a batch slot "
                                 f"(max_queue={self.max_queue}); retry later",
                                 retry_after_s=self.retry_after_s)
            self.waiting += 1
            self._publish()

    def leave(self) -> None:
        with self._lock:
            self.waiting -= 1
            self._publish()

    def _publish(self) -> None:
        if self.metrics:
            self.metrics.waiting.set(self.waiting)


class _Seq:
    __slots__ = ("req", "loop", "queue", "rng", "decoder", "cancelled", "done", "generated", "seen", "counts",
                 "pos", "t_arrival", "t_last")

    def __init__(self, req: GenerationRequest, loop: asyncio.AbstractEventLoop, tokenizer: Tokenizer) -> None:
        self.req = req
        self.loop = loop
        self.queue: asyncio.Queue[GenerationEvent] = asyncio.Queue()
        self.rng = np.random.default_rng(req.params.seed)
        self.decoder = IncrementalDecoder(tokenizer, req.params.stop)
        self.cancelled = False
        self.done = False
        self.generated: list[int] = []
        self.seen: set[int] = set(req.prompt_ids) if req.params.repetition_penalty != 1.0 else set()
        # generated-token counts for the presence/frequency penalties (None when both are 0)
        self.counts: dict[int, int] | None = {} if (req.params.presence_penalty or req.params.frequency_penalty) \
            else None
        self.pos = len(req.prompt_ids)
        self.t_arrival = time.perf_counter()
        self.t_last = 0.0

    def emit(self, event: GenerationEvent) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # event loop closed: nobody listens any more
            self.cancelled = True


class BatchEngine:
    """Decodes the requests of one model variant together; ``generate`` is the async entry point."""

    def __init__(self, runner: ModelRunner, tokenizer: Tokenizer, *, pad_token_id: int, max_batch_size: int = 8,
                 batch_wait_ms: float = 5.0, gate: AdmissionGate | None = None, metrics=None,
                 name: str = "model") -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.pad_token_id = int(pad_token_id)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.gate = gate or AdmissionGate(max_queue=1 << 30)
        self.metrics = metrics
        self.name = name
        self.running = 0
        self.steps = 0
        self._pending: deque[_Seq] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"engine-{name}", daemon=True)
        self._thread.start()

    # --- async side ---------------------------------------------------------------------------
    def submit(self, req: GenerationRequest) -> "_Seq":
        """Queue a request (call from the event loop). Raises Overloaded (429) at once when the queue is
        full. Read its events with :meth:`events`; set ``cancelled`` on the handle to drop it."""
        if self._closed:
            raise RuntimeError("engine closed")
        self.gate.enter()
        seq = _Seq(req, asyncio.get_running_loop(), self.tokenizer)
        with self._cv:
            self._pending.append(seq)
            self._cv.notify()
        return seq

    async def events(self, seq: "_Seq") -> AsyncIterator[GenerationEvent]:
        """Events of a submitted request; the last has ``finish_reason``. Leaving early cancels it."""
        try:
            while True:
                event = await seq.queue.get()
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            seq.cancelled = True   # no-op when finished; else the worker drops the row at its next step

    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """submit + events."""
        seq = self.submit(req)
        async for event in self.events(seq):
            yield event

    def close(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)
        self.runner.close()

    @property
    def waiting(self) -> int:
        return len(self._pending)

    # --- worker thread ------------------------------------------------------------------------
    def _admit(self, room: int) -> list[_Seq]:
        out: list[_Seq] = []
        while self._pending and len(out) < room:
            seq = self._pending.popleft()
            self.gate.leave()
            if seq.cancelled:   # counted by the serving layer
                continue
            out.append(seq)
        return out

    def _loop(self) -> None:
        rows: list[_Seq] = []
        past = None
        mask: np.ndarray | None = None
        while True:
            with self._cv:
                if not rows:
                    while not self._pending and not self._closed:
                        self._cv.wait()
                    if self._closed and not self._pending:
                        return
                    deadline = time.perf_counter() + self.batch_wait_s
                    while len(self._pending) < self.max_batch_size and not self._closed:
                        left = deadline - time.perf_counter()
                        if left <= 0:
                            break
                        self._cv.wait(left)
                new = self._admit(self.max_batch_size - len(rows))
            try:
                if new:
                    now = time.perf_counter()
                    if self.metrics:
                        for s in new:
                            self.metrics.queue_time.observe(now - s.t_arrival)
                            self.metrics.prompt_tokens.inc(len(s.req.prompt_ids))
                    self._set_running(len(rows) + len(new))
                    new_past, new_mask, new = self._prefill(new)
                    if new:
                        if past is None:
                            past, mask = new_past, new_mask
                        else:
                            past = self.runner.concat(past, new_past)
                            mask = _concat_masks(mask, new_mask)
                        rows = rows + new
                elif rows:
                    ids = np.array([[s.generated[-1]] for s in rows], dtype=np.int64)
                    mask = np.concatenate([mask, np.ones((len(rows), 1), dtype=np.int64)], axis=1)
                    pos = np.array([[s.pos] for s in rows], dtype=np.int64)
                    logits, past = self.runner.forward(ids, mask, pos, past)
                    self._observe_step(len(rows))
                    for s in rows:
                        s.pos += 1
                    self._take_tokens(rows, logits)
                keep = [i for i, s in enumerate(rows) if not s.done]
                if len(keep) < len(rows):
                    rows = [rows[i] for i in keep]
                    if rows:
                        idx = np.array(keep, dtype=np.int64)
                        past = self.runner.select(past, idx)
                        mask = mask[idx]
                        used = np.flatnonzero(mask.any(axis=0))
                        first = int(used[0]) if used.size else 0
                        if first:
                            past = self.runner.trim_left(past, first)
                            mask = mask[:, first:]
                    else:
                        past, mask = None, None
                self._set_running(len(rows))
            except Exception as exc:  # a failed step fails its rows, never the engine
                log.exception("decode step failed", extra={"model": self.name})
                for s in rows + new:
                    if not s.done:
                        s.done = True
                        s.emit(GenerationEvent("", [], finish_reason="error", error=f"generation failed: {exc}"))
                        if self.metrics:
                            self.metrics.request_failure.labels("error").inc()
                rows, past, mask = [], None, None
                self._set_running(0)

    def _prefill(self, seqs: list[_Seq]):
        lengths = [len(s.req.prompt_ids) for s in seqs]
        width = max(lengths)
        ids = np.full((len(seqs), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, width - lengths[i]:] = s.req.prompt_ids
            mask[i, width - lengths[i]:] = 1
        pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        logits, past = self.runner.forward(ids, mask, pos, None)
        self._observe_step(len(seqs))
        self._take_tokens(seqs, logits)
        keep = [i for i, s in enumerate(seqs) if not s.done]
        if len(keep) < len(seqs):
            if not keep:
                return None, None, []
            idx = np.array(keep, dtype=np.int64)
            past, mask = self.runner.select(past, idx), mask[idx]
            seqs = [seqs[i] for i in keep]
        return past, mask, seqs

    def _take_tokens(self, seqs: list[_Seq], logits: np.ndarray) -> None:
        now = time.perf_counter()
        m = self.metrics
        for i, s in enumerate(seqs):
            if s.cancelled:
                s.done = True
                continue
            p = s.req.params
            row = logits[i]
            top = _top_logprobs(row, p.logprobs) if p.logprobs is not None else None   # before any mask
            constraint = s.req.constraint
            if constraint is not None and not constraint.mask(row):
                s.done = True
                s.emit(GenerationEvent("", [], finish_reason="error", prompt_tokens=len(s.req.prompt_ids),
                                       completion_tokens=len(s.generated),
                                       error=f"the grammar allows no next token: {constraint.error or 'dead end'}"))
                if m:
                    m.request_failure.labels("error").inc()
                continue
            seen = np.fromiter(s.seen, dtype=np.int64) if s.seen else None
            counts = None
            if s.counts:
                counts = (np.fromiter(s.counts.keys(), dtype=np.int64, count=len(s.counts)),
                          np.fromiter(s.counts.values(), dtype=np.float32, count=len(s.counts)))
            tok = sample_token(row, p, s.rng, seen, counts=counts)
            s.generated.append(tok)
            if p.repetition_penalty != 1.0:
                s.seen.add(tok)
            if s.counts is not None:
                s.counts[tok] = s.counts.get(tok, 0) + 1
            if constraint is not None:
                constraint.advance(tok)
            finish = None
            if tok in s.req.eos_token_ids:
                text, finish = s.decoder.flush(), "stop"
            else:
                text, hit = s.decoder.add(tok)
                if hit or (constraint is not None and constraint.finished):
                    if not hit:
                        text += s.decoder.flush()
                    finish = "stop"
                elif len(s.generated) >= p.max_new_tokens:
                    text, finish = text + s.decoder.flush(), "length"
            if m:
                m.generation_tokens.inc()
                if len(s.generated) == 1:
                    m.ttft.observe(now - s.t_arrival)
                else:
                    m.itl.observe(now - s.t_last)
                if finish:
                    m.e2e.observe(now - s.t_arrival)
                    m.request_success.labels(finish).inc()
            s.t_last = now
            if finish:
                s.done = True
            s.emit(GenerationEvent(text, [tok], finish_reason=finish, prompt_tokens=len(s.req.prompt_ids),
                                   completion_tokens=len(s.generated),
                                   logprobs=None if top is None else [top(tok)]))

    def _observe_step(self, n: int) -> None:
        self.steps += 1
        if self.metrics:
            self.metrics.batch_size.observe(n)

    def _set_running(self, n: int) -> None:
        if self.metrics and n != self.running:
            self.metrics.running.inc(n - self.running)
        self.running = n


def _top_logprobs(row: np.ndarray, k: int):
    """Log-softmax of one row's raw logits: a function of the chosen token giving its TokenLogprob with the
    ``k`` most likely tokens (best first)."""
    m = float(row.max())
    lse = m + float(np.log(np.exp(row - m, dtype=np.float64).sum()))
    best: tuple[tuple[int, float], ...] = ()
    if k > 0:
        idx = np.argpartition(-row, k - 1)[:k]
        idx = idx[np.argsort(-row[idx], kind="stable")]
        best = tuple((int(j), float(row[j]) - lse) for j in idx)
    return lambda tok: TokenLogprob(int(tok), float(row[tok]) - lse, best)


def _concat_masks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    la, lb = a.shape[1], b.shape[1]
    if la < lb:
        a = np.pad(a, ((0, 0), (lb - la, 0)))
    elif lb < la:
        b = np.pad(b, ((0, 0), (la - lb, 0)))
    return np.concatenate([a, b], axis=0)
