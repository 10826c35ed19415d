"""A live `model.serve` on 127.0.0.1 for the server and browser tests.

The real app and worker (built as the CLI builds them) on a tiny random checkpoint, with uvicorn
in a background thread on a free port. Random weights are enough: at temperature 0 the replies
are deterministic, so each can be checked against model.generate on the same weights.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from model_fixtures import build_checkpoint, build_tokenizer

from model.serve.app import ServedModel, create_app
from model.serve.cli import build_parser, build_served_model, listening_socket

BLOCK_SIZE = 256  # room for replies of a couple hundred tokens


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:<port>
    served: ServedModel
    run_dir: Path


def build_run(root: Path) -> Path:
    tokenizer_path = build_tokenizer(root / "tokenizer.json")
    _, run_dir = build_checkpoint(root / "tiny_chat", tokenizer_path, block_size=BLOCK_SIZE)
    return run_dir


@contextmanager
def live_server(run_dir: Path, *extra_args: str) -> Iterator[LiveServer]:
    args = build_parser().parse_args(["--checkpoint", str(run_dir), "--device", "cpu", *extra_args])
    served = build_served_model(args)
    served.worker.start()
    sock = listening_socket("127.0.0.1", 0)  # a free port
    server = uvicorn.Server(uvicorn.Config(create_app(served), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{sock.getsockname()[1]}", served, run_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        served.worker.stop()
        sock.close()


def slow_decoding(monkeypatch, server: LiveServer, seconds: float = 0.02) -> None:
    """Each decode step of the server's worker takes `seconds` longer: a reply of a few hundred
    tokens then runs for seconds, long enough to stop, leave or start a new chat during it."""
    generator = server.served.worker.generator
    step = generator.step

    def slow_step():
        time.sleep(seconds)
        return step()

    monkeypatch.setattr(generator, "step", slow_step)
