r"""Serve a checkpoint over HTTP: OpenAI-compatible endpoints and a web chat page.

    python3 -m model.serve --checkpoint checkpoints/dpo           # http://127.0.0.1:8000
    python3 -m model.serve --checkpoint checkpoints/dpo --api-key "$(openssl rand -hex 16)"

Tiny CPU example, after the README's sample pipeline:
    python3 -m model.serve --checkpoint checkpoints/sample_dpo
then open http://127.0.0.1:8000, or point any OpenAI client at http://127.0.0.1:8000/v1.
It binds 127.0.0.1 (this machine only) unless --host says otherwise; then set an --api-key.
"""

from __future__ import annotations

import argparse
import socket
import sys

import torch
import uvicorn

from common.errors import ArgumentParser, UserError
from model.checkpoint import resolve_checkpoint
from model.generate import load_for_generation
from model.serve.app import ServedModel, create_app
from model.serve.worker import GenerationWorker

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python3 -m model.serve",
        description="Serve a checkpoint: OpenAI-compatible API and a web chat page.",
    )
    add = parser.add_argument
    add("--checkpoint", required=True, help="run folder or step folder")
    add("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    add("--port", type=int, default=8000, help="port (default: 8000)")
    add("--api-key", help="require this key as `Authorization: Bearer <key>`")
    add("--model-name", help="model id in the API (default: the run's name)")
    add("--batch-size", type=int, default=8, help="requests decoded at once; more wait (default 8)")
    add("--request-timeout", type=float, default=120, help="seconds per request (default: 120)")
    add("--device", help="cpu, cuda, cuda:1, mps (default: cuda when there is one)")
    add(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="compile the decode step at start-up; auto: on a GPU only (on a CPU it decodes "
        "every row and position, busy or not)",
    )
    return parser


def bind_warning(host: str, api_key: str | None) -> str | None:
    """What to tell the user before listening beyond this machine (None on loopback)."""
    if host not in LOOPBACK:
        advice = "" if api_key else "; consider --api-key"
        return f"warning: binding {host}: anyone who can reach this port can use the model{advice}"
    return None


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind now, before loading the model, so that a busy port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:
        reason = f"{error.strerror}; is another server there? choose another --port"
        raise UserError(f"cannot listen on {host}:{port} ({reason})") from None


def build_served_model(args: argparse.Namespace) -> ServedModel:
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.request_timeout > 0:
        raise UserError(f"--request-timeout must be > 0 seconds, got {args.request_timeout}")
    model, tokenizer, _ = load_for_generation(args.checkpoint, args.device)
    on_gpu = next(model.parameters()).is_cuda
    model = model.to(torch.bfloat16) if on_gpu else model
    compile = args.compile == "on" or (args.compile == "auto" and on_gpu)
    vocab = tokenizer.get_vocab_size()
    worker = GenerationWorker(model, args.batch_size, args.request_timeout, compile, vocab)
    # the run folder's name: checkpoints/sample_dpo -> sample_dpo (also for a step folder)
    name = args.model_name or resolve_checkpoint(args.checkpoint).resolve().parent.name
    return ServedModel(name, tokenizer, worker, args.api_key)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if warning := bind_warning(args.host, args.api_key):
        print(warning, file=sys.stderr)
    with listening_socket(args.host, args.port) as sock:
        served = build_served_model(args)
        print(f"warming up the decoder on {served.worker.device} ...", flush=True)
        served.worker.start()
        url = f"http://{args.host}:{sock.getsockname()[1]}"
        print(f"serving {served.name} at {url}  (Ctrl-C stops)", flush=True)
        server = uvicorn.Server(uvicorn.Config(create_app(served), log_level="warning"))
        try:
            server.run(sockets=[sock])
        finally:
            served.worker.stop()
