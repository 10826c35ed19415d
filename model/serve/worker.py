"""The server's generation worker: one thread owns the model and decodes every request.

Requests wait in a queue; the worker admits as many as the decoder has rows (--batch-size),
prefills each prompt into its own row of the KV cache, then advances all of them together, one
token per step (model/streams.py). A finished, cancelled (the client went away) or timed-out
request leaves its row to the next one. The HTTP side (model/serve/app.py) runs on asyncio:
each job carries the event loop and an asyncio.Queue its events are delivered to.

Events put on job.events: ("token", id), then ("done", finish_reason) or ("error", ApiError).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

import torch

from model.decoding import Decoder
from model.serve.schema import ApiError
from model.streams import Stream, StreamBatch


@dataclass
class Job:
    stream: Stream
    deadline: float  # time.monotonic() after which the request is cut off
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # set by the HTTP side when the client is gone

    def emit(self, kind: str, value) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: server shutdown
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class GenerationWorker:
    def __init__(
        self,
        model: torch.nn.Module,
        batch_size: int = 8,
        request_timeout: float = 120.0,
        compiled: bool = False,
    ):
        self.model, self.batch_size, self.compiled = model, batch_size, compiled
        self.device = next(model.parameters()).device
        self.batch: StreamBatch | None = None  # made by the worker thread (see _ready_decoder)
        self.request_timeout = request_timeout
        self.waiting: queue.Queue[Job] = queue.Queue()
        self.running: dict[Stream, Job] = {}
        self.stats: Counter = Counter()  # finish reasons, most_streams_at_once
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="generation", daemon=True)

    def start(self) -> None:
        """Start the thread and wait until its decoder is ready (compiled: seconds on a CPU,
        about a minute with CUDA graphs)."""
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _ready_decoder(self) -> None:
        """Make the decoder and warm it up (compiling, when compiled). Compiling can fail where
        the machine lacks what Inductor needs (a C++ compiler on a CPU): say so, and decode
        eagerly instead."""
        try:
            self.batch = StreamBatch(Decoder(self.model, self.batch_size, self.compiled))
            self.warm_up()
        except Exception as error:
            if not self.compiled:
                raise
            first_line = (str(error).strip().splitlines() or [repr(error)])[0][:200]
            print(
                f"warning: could not compile the decoder ({first_line}); decoding eagerly",
                file=sys.stderr,
            )
            self.compiled = False
            self.batch = StreamBatch(Decoder(self.model, self.batch_size))
            self.warm_up()

    def warm_up(self) -> None:
        """Run a few steps once, so that the first request pays no first-use costs."""
        stream = Stream([0], max_new_tokens=4, vocab_size=self.batch.decoder.config.vocab_size)
        self.batch.add(stream)
        while self.batch.streams:
            self.batch.step()

    def submit(self, stream: Stream) -> Job:
        """Queue a request (call from the event loop); its events arrive on job.events."""
        deadline = time.monotonic() + self.request_timeout
        job = Job(stream, deadline, asyncio.get_running_loop())
        self.waiting.put(job)
        return job

    def _run(self) -> None:
        try:
            self._ready_decoder()
        except BaseException as error:
            self._failed = error
            return
        finally:
            self._ready.set()
        while not self._stop.is_set():
            try:
                self._serve_once()
            except Exception as error:  # e.g. out of memory: fail these requests, keep serving
                traceback.print_exc()
                self._fail_running(error)

    def _serve_once(self) -> None:
        """Admit what fits, drop what was cancelled or is late, and decode one token."""
        self._admit(block=not self.running)
        self._drop_cancelled_and_late()
        if not self.running:
            return
        self.stats["most_streams_at_once"] = max(
            self.stats["most_streams_at_once"], len(self.running)
        )
        for stream, token in self.batch.step():
            job = self.running[stream]
            if token is not None:
                job.emit("token", token)
            if stream.finish_reason:
                self._finish(job, stream.finish_reason)

    def _admit(self, block: bool) -> None:
        """Move waiting jobs into free rows (waiting briefly for one when idle)."""
        while self.batch.has_room():
            try:
                job = self.waiting.get(timeout=0.05) if block else self.waiting.get_nowait()
            except queue.Empty:
                return
            block = False
            if job.cancelled:
                continue
            if time.monotonic() > job.deadline:
                job.emit("error", ApiError(503, "timed out waiting for a free slot; retry"))
                continue
            try:
                self.batch.add(job.stream)
            except Exception as error:
                traceback.print_exc()
                job.emit("error", ApiError(500, f"generation failed: {error}", "server_error"))
                continue
            if job.stream.finish_reason:  # nothing to generate
                job.emit("done", job.stream.finish_reason)
            else:
                self.running[job.stream] = job

    def _drop_cancelled_and_late(self) -> None:
        now = time.monotonic()
        for stream, job in list(self.running.items()):
            if job.cancelled:
                self.batch.remove(stream)
                self._finish(job, "cancelled")
            elif now > job.deadline:
                self.batch.remove(stream)
                self.stats["timed_out"] += 1
                self._finish(job, "length")  # cut off: as if max_tokens were reached

    def _finish(self, job: Job, reason: str) -> None:
        self.running.pop(job.stream, None)
        self.stats[reason] += 1
        job.emit("done", reason)

    def _fail_running(self, error: Exception) -> None:
        """Fail every running request and start again from an empty batch."""
        for job in self.running.values():
            job.emit("error", ApiError(500, f"generation failed: {error}", "server_error"))
        self.running.clear()
        decoder = self.batch.decoder
        decoder.cache.reset()
        self.batch = StreamBatch(decoder)
