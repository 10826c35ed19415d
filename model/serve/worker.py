"""The server's generation worker: one thread owns the model and decodes every request.

Requests wait in a queue; each takes a free row of the Generator (model/generate.py) until it
finishes, is cancelled (the client left) or is late. Its events go to the HTTP side (app.py) as
("token", id), then ("done", finish_reason) or ("error", ApiError).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

import torch

from model.generate import Generator, Stream
from model.serve.schema import ApiError


@dataclass
class Job:
    stream: Stream
    deadline: float  # time.monotonic() after which the request is cut off
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # set by the HTTP side when the client is gone
    client_checked_at: float = 0.0  # when the HTTP side last asked if the client is there

    def emit(self, kind: str, value) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: server shutdown
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class GenerationWorker:
    def __init__(self, model, batch_size=8, request_timeout=120.0, compile=False, vocab_size=None):
        self.model, self.batch_size, self.compile = model, batch_size, compile
        self.request_timeout, self.vocab_size = request_timeout, vocab_size
        self.device = next(model.parameters()).device
        self.generator: Generator | None = None  # made (and compiled) by the worker thread
        self.waiting: queue.Queue[Job] = queue.Queue()
        self.running: dict[Stream, Job] = {}
        self._stop, self._ready = threading.Event(), threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="generation", daemon=True)

    def start(self) -> None:
        """Start the thread; return once its generator is compiled and warm."""
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def submit(self, stream: Stream) -> Job:
        """Queue a request (from the event loop); its events arrive on job.events."""
        job = Job(stream, time.monotonic() + self.request_timeout, asyncio.get_running_loop())
        self.waiting.put(job)
        return job

    def _start_generator(self) -> None:
        """Make the generator and run a few tokens, so that no request waits for compiling.
        Where compiling fails (no C++ compiler for Inductor on a CPU, say), decode eagerly."""
        try:
            self.generator = Generator(self.model, self.batch_size, self.vocab_size, self.compile)
            list(self.generator.run([Stream([0], 4, stop_ids=())]))
        except Exception as error:
            if not self.compile:
                raise
            reason = (str(error).strip().splitlines() or [repr(error)])[0][:200]
            warning = f"warning: could not compile the decoder ({reason}); decoding eagerly"
            print(warning, file=sys.stderr)
            self.compile = False
            self._start_generator()

    @torch.no_grad()
    def _run(self) -> None:
        try:
            self._start_generator()
        except BaseException as error:
            self._failed = error
        self._ready.set()
        while not self._stop.is_set() and self._failed is None:
            try:
                self._serve_once()
            except Exception as error:  # out of memory, say: fail these requests, keep serving
                traceback.print_exc()
                for job in self.running.values():
                    job.emit("error", ApiError(500, f"generation failed: {error}"))
                    self.generator.remove(job.stream)
                self.running.clear()

    def _serve_once(self) -> None:
        """Admit what fits, drop what was cancelled or is late, and decode one token."""
        while None in self.generator.rows:
            try:  # waiting a little for a job when idle
                job = self.waiting.get(timeout=0 if self.running else 0.05)
            except queue.Empty:
                break
            if time.monotonic() > job.deadline:
                job.emit("error", ApiError(503, "timed out waiting for a free slot; retry"))
            elif not job.cancelled:
                self.running[job.stream] = job
                self.generator.add(job.stream)
        for job in list(self.running.values()):
            if job.cancelled:
                self._finish(job, "cancelled")
            elif time.monotonic() > job.deadline:  # cut off, as if max_tokens were reached
                self._finish(job, "length")
        for stream, token in self.generator.step():
            if token is not None:
                self.running[stream].emit("token", token)
            if stream.finish_reason:
                self._finish(self.running[stream], stream.finish_reason)

    def _finish(self, job: Job, reason: str) -> None:
        """Free the job's row and send its last event."""
        self.generator.remove(job.stream)
        del self.running[job.stream]
        job.emit("done", reason)
