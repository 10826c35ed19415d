r"""Generate text from a checkpoint: complete a prompt, or chat with a fine-tuned model.

    python3 -m model.generate --checkpoint checkpoints/<run> --prompt "Once upon a time"
    python3 -m model.generate --checkpoint checkpoints/<run> --chat --system "Be brief."

Tiny CPU example, after the README's sample pipeline:
    python3 -m model.generate --checkpoint checkpoints/sample_pre_training --prompt "The"

The one way to generate (this command, model.serve, the evaluation, the training samples):
`Generator(model, batch_size).run(streams)` decodes streams together, each in a row of one KV
cache with its own sampling and stop ids. Prompts are prefilled one at a time, then each decode
step runs every busy row; compile=True compiles that step over the whole cache (a CUDA graph on
CUDA). A stream that outgrows the cache goes on from its most recent block_size // 2 tokens.
"""

from __future__ import annotations

import argparse
import math
from collections import deque
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.backends import mps

from common.atomic import sha256_file
from common.errors import ArgumentParser, UserError, run_cli
from model.checkpoint import load_model, unwrap_model
from model.kv_cache import KVCache
from tokenizer.encoding import ChatTokenizer, load_tokenizer

SEEDS = range(-(1 << 63), 1 << 64)  # what torch.Generator.manual_seed takes
SAMPLING_FLAGS = ("max_new_tokens", "temperature", "top_k", "top_p", "seed")  # generate()'s


@dataclass
class Sampling:
    temperature: float = 1.0  # 0 = greedy (the most likely token)
    top_k: int | None = None  # sample among the k most likely tokens only
    top_p: float | None = None  # nucleus: the smallest set holding this much probability
    seed: int | None = None  # the same seed gives the same sample


def sample(logits: torch.Tensor, rows: list[Sampling], generators: list, vocab_size: int):
    """Ids [n] (< vocab_size) for logits [n, V_pad], row i drawn with rows[i], generators[i]."""
    logits = logits[:, :vocab_size].float()  # [n, V]: padded ids are not tokens
    greedy = logits.argmax(dim=-1)
    if all(row.temperature == 0 for row in rows):
        return greedy

    def column(values):
        return torch.tensor(values, device=logits.device, dtype=torch.float32)[:, None]  # [n, 1]

    # from each row's largest logit, over a temperature kept above 0 (1e-45 stays finite)
    temperature = column([row.temperature for row in rows])
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature.clamp_min(1e-38)
    order = None
    if any(row.top_k or (row.top_p or 1) < 1 for row in rows):
        logits, order = logits.sort(dim=-1, descending=True)  # [n, V]
        rank = torch.arange(vocab_size, device=logits.device)  # [V]
        logits = logits.masked_fill(
            rank >= column([row.top_k or vocab_size for row in rows]), -math.inf
        )
    probs = torch.softmax(logits, dim=-1)
    if order is not None:
        # drop a token once those ranked above it hold top_p of the mass; keep the first always
        top_p = column([row.top_p if (row.top_p or 1) < 1 else 2.0 for row in rows])
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
    # argmax(probs / noise) with Exponential(1) noise picks token i with probability probs[i]
    noise = torch.empty_like(probs).exponential_()
    for row, generator in enumerate(generators):
        if generator is not None:
            noise[row].exponential_(generator=generator)
    picked = (probs / noise).argmax(dim=-1)  # [n]
    if order is not None:
        picked = order.gather(-1, picked[:, None])[:, 0]  # back to vocabulary ids
    return torch.where(temperature[:, 0] == 0, greedy, picked)


@dataclass(eq=False)  # each stream is itself (a dict key), however its tokens compare
class Stream:
    """One sequence being generated: its tokens so far, how it samples, when it stops."""

    tokens: list[int]  # the prompt, then every generated token
    max_new_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    stop_ids: Collection[int] = ()  # a stop id ends the stream (it is not part of it)
    finish_reason: str | None = None  # "stop" (a stop id) or "length"
    next_token: int | None = None  # sampled, not yet taken
    row: int | None = None  # its row of the KV cache while it runs
    generator: torch.Generator | None = None  # its seed's, on the model's device

    def __post_init__(self):
        self.tokens = list(self.tokens)
        if not self.tokens:
            raise ValueError("a stream needs at least one prompt token (e.g. <|endoftext|>)")
        self.prompt_length = len(self.tokens)

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_length :]

    def take_next_token(self) -> int | None:
        """The sampled token, or None for a stop id."""
        token, self.next_token = self.next_token, None
        if token in self.stop_ids:
            self.finish_reason = "stop"
            return None
        self.tokens.append(token)
        if len(self.tokens) - self.prompt_length >= self.max_new_tokens:
            self.finish_reason = "length"
        return token


class Generator:
    """Streams decoded together, each in its own row of one KV cache."""

    def __init__(self, model: torch.nn.Module, batch_size=1, vocab_size=None, compile=False):
        self.model = unwrap_model(model)
        self.device = next(self.model.parameters()).device
        self.vocab_size = vocab_size or self.model.config.vocab_size
        self.cache = KVCache(self.model.config, batch_size)
        dtype = next(self.model.parameters()).dtype
        if torch.is_autocast_enabled(self.device.type):  # the keys come out in autocast's dtype
            dtype = torch.get_autocast_dtype(self.device.type)
        self.cache.allocate(self.device, dtype)
        self.rows: list[Stream | None] = [None] * batch_size
        self.compiled, self._step = compile, self._decode_step
        if compile:  # fixed addresses: a CUDA graph reads and writes the cache in place
            for tensor in self.cache.keys + self.cache.values:
                torch._dynamo.mark_static_address(tensor)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._step = torch.compile(self._decode_step, mode=mode, fullgraph=True, dynamic=False)

    @property
    def streams(self) -> list[Stream]:  # the streams running now
        return [stream for stream in self.rows if stream is not None]

    @torch.no_grad()
    def add(self, stream: Stream) -> None:
        """Prefill the stream's prompt (at most max_length tokens) and sample its first token."""
        if stream.max_new_tokens <= 0:
            stream.finish_reason = "length"
            return
        row = self.rows.index(None)  # ValueError when every row is busy
        if stream.sampling.seed is not None:
            stream.generator = torch.Generator(self.device).manual_seed(stream.sampling.seed)
        logits = self._prefill(row, stream.tokens[-self.cache.max_length :])
        stream.row, self.rows[row] = row, stream
        stream.next_token = self._sample([stream], logits[None])[0]

    @torch.no_grad()
    def step(self) -> list[tuple[Stream, int | None]]:
        """Every running stream takes its sampled token (None: it stopped; a finished stream
        leaves its row), then one decode step samples the next token of those that go on."""
        events = [(stream, stream.take_next_token()) for stream in self.streams]
        for stream, _ in events:
            if stream.finish_reason:
                self.remove(stream)
        running = self.streams
        if running:
            for stream in running:
                self._make_room(stream)
            for stream, token in zip(running, self._sample(running, self._decode(running))):
                stream.next_token = token
        return events

    def remove(self, stream: Stream) -> None:
        """Free the stream's row (finished, or cancelled by the caller: a stop string, say)."""
        if stream.row is not None and self.rows[stream.row] is stream:
            self.rows[stream.row], self.cache.lengths[stream.row] = None, 0
        stream.row = None

    def run(self, streams: Iterable[Stream]) -> Iterator[tuple[Stream, int | None]]:
        """Decode every stream, each taking the first free row: (stream, token) events."""
        waiting = deque(streams)
        while waiting or self.streams:
            while waiting and None in self.rows:
                self.add(waiting.popleft())
            yield from self.step()

    def _prefill(self, row: int, ids: list[int]) -> torch.Tensor:
        """Encode ids into row `row` (replacing what it held); logits [V_pad] for the next."""
        self.cache.lengths[row] = 0
        idx = torch.tensor([ids], device=self.device)  # [1, T]
        logits = self.model(idx, self.cache.rows(row, row + 1), last_only=True)  # [1, 1, V_pad]
        self.cache.lengths[row] = len(ids)
        return logits[0, -1]

    def _make_room(self, stream: Stream) -> None:
        """A full row goes on from its stream's last max_length // 2 tokens (encoded again)."""
        if self.cache.lengths[stream.row] >= self.cache.max_length:
            keep = max(2, self.cache.max_length // 2)
            self._prefill(stream.row, stream.tokens[-keep:-1])

    def _decode(self, running: list[Stream]) -> torch.Tensor:
        """Logits [len(running), V_pad] after each row's last token (decoding eagerly rows 0 ..
        the last busy one, compiled every row: idle ones decode at position 0)."""
        n = len(self.rows) if self.compiled else max(stream.row for stream in running) + 1
        tokens = torch.tensor([s.tokens[-1] if s else 0 for s in self.rows[:n]], device=self.device)
        if self.compiled:
            positions = torch.tensor(self.cache.lengths, device=self.device)  # [n]
            if self.device.type == "cuda":  # the last step's logits (graph outputs) are used
                torch.compiler.cudagraph_mark_step_begin()
            logits = self._step(tokens, positions)
        else:
            logits = self.model(tokens[:, None], self.cache.rows(0, n), last_only=True)[:, -1]
        rows = [stream.row for stream in running]
        for row in rows:
            self.cache.lengths[row] += 1
        return logits if rows == list(range(n)) else logits[torch.tensor(rows, device=self.device)]

    def _decode_step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The compiled step: tokens [B] at positions [B] -> logits [B, V_pad]."""
        return self.model(tokens[:, None], self.cache, last_only=True, positions=positions)[:, -1]

    def _sample(self, streams: list[Stream], logits: torch.Tensor) -> list[int]:
        rows, generators = [s.sampling for s in streams], [s.generator for s in streams]
        return sample(logits, rows, generators, self.vocab_size).tolist()


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Iterable[int] = (),
    seed: int | None = None,
    vocab_size: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time (a batch of one); a stop id ends it and is not yielded."""
    sampling = Sampling(temperature, top_k, top_p, seed)
    stream = Stream(list(prompt_ids), max_new_tokens, sampling, stop_ids)
    for _, token in Generator(model, vocab_size=vocab_size).run([stream]):
        if token is not None:
            yield token


def generate_text(model, tokenizer: ChatTokenizer, prompt: str, max_new_tokens: int, **kwargs):
    """Continue a plain-text prompt (a pre-training document); returns only the new text."""
    kwargs.setdefault("stop_ids", tokenizer.stop_ids)
    ids = list(generate(model, tokenizer.document(prompt), max_new_tokens, **kwargs))
    return tokenizer.decode(ids)


class StreamDecoder:
    """Token ids -> printable text, never splitting a UTF-8 character: a byte-level BPE token
    that ends mid-character (decoded as U+FFFD) waits for the rest of that character."""

    def __init__(self, tokenizer: ChatTokenizer):
        self.tokenizer = tokenizer
        self.pending: list[int] = []  # ids whose text is not yet complete

    def push(self, token_id: int) -> str:
        self.pending.append(token_id)
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd"):
            return ""  # wait for the rest of the character
        self.pending = []
        return text

    def finish(self) -> str:
        """Whatever is left (a truly invalid byte sequence stays as U+FFFD)."""
        text, self.pending = self.tokenizer.decode(self.pending), []
        return text


def print_reply(tokens: Iterator[int], tokenizer: ChatTokenizer) -> str:
    """Print tokens as they are generated; return the reply's text."""
    decoder, pieces = StreamDecoder(tokenizer), []
    for token_id in tokens:
        pieces.append(decoder.push(token_id))
        print(pieces[-1], end="", flush=True)
    pieces.append(decoder.finish())
    print(pieces[-1], flush=True)
    return "".join(pieces)


def chat(model, tokenizer: ChatTokenizer, sampling: dict, system: str | None, input_fn=input):
    """Read user turns until EOF or `/quit` (skipping empty lines); `/reset` clears history."""
    base = [{"role": "system", "content": system}] if system else []
    messages, block = list(base), unwrap_model(model).config.block_size
    print("chat: type a message; /reset clears the history; /quit or Ctrl-D ends.")
    while True:
        try:
            user_text = input_fn("user> ")
        except EOFError:
            print()
            return
        if user_text.strip() == "/quit":
            return
        if user_text.strip() == "/reset":
            messages = list(base)
            print("(history cleared)")
        elif user_text.strip():
            messages.append({"role": "user", "content": user_text})
            prompt_ids = tokenizer.prompt(messages)
            if len(prompt_ids) >= block:
                print(f"(conversation: {len(prompt_ids)} tokens; the model sees the last {block})")
            print("assistant> ", end="", flush=True)
            reply = print_reply(generate(model, prompt_ids, **sampling), tokenizer)
            messages.append({"role": "assistant", "content": reply})


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python3 -m model.generate",
        description="Complete a prompt or chat with a trained checkpoint.",
    )
    add = parser.add_argument
    add("--checkpoint", required=True, help="run folder (follows its `latest`) or step folder")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prompt", help="text to continue (encoded as a document: BOS + text)")
    mode.add_argument("--chat", action="store_true", help="interactive chat (its chat template)")
    add("--system", help="system message for --chat")
    add("--max-new-tokens", type=int, default=256, help="at most (default 256)")
    add("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    add("--top-k", type=int, help="sample among the k most likely tokens only")
    add("--top-p", type=float, help="nucleus: the likeliest tokens that hold this much probability")
    add("--seed", type=int, help="random seed (same seed, same sample)")
    add("--device", help="cpu, cuda, cuda:1, mps (default: cuda when there is one)")
    return parser


def check_sampling_args(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not 0 <= args.temperature < math.inf:  # nan fails this too
        raise UserError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.seed is not None and args.seed not in SEEDS:
        raise UserError(f"--seed must fit in 64 bits, got {args.seed}")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")


def pick_device(name: str | None = None) -> torch.device:
    """--device: cpu, cuda, cuda:N or mps, when it is here (None or "auto": cuda when there is
    one, else cpu); anything else is a one-line UserError."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (cpu, cuda, cuda:1, mps)") from None
    here = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps.is_available()}
    if not here.get(device.type):
        raise UserError(f"--device {name}: {device.type} is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} GPUs here")
    return device


def load_for_generation(
    checkpoint: str, device: str | None = None, tokenizer: str | None = None
) -> tuple[torch.nn.Module, ChatTokenizer, dict]:
    """The checkpoint's model on pick_device(device), its tokenizer.json (or `tokenizer`, when its
    sha256 is the one the checkpoint records) and its config.json, or a one-line UserError."""
    model, config, own = load_model(checkpoint, device=pick_device(device))
    path = own if tokenizer is None else Path(tokenizer)
    if path is None:
        raise UserError(f"{checkpoint} has no tokenizer.json next to its weights")
    loaded = load_tokenizer(path)
    recorded = (config.get("tokenizer") or {}).get("sha256")
    if tokenizer is not None and recorded and sha256_file(path) != recorded:
        raise UserError(
            f"--tokenizer {tokenizer} is not the tokenizer {checkpoint} was trained with"
        )
    if loaded.get_vocab_size() > model.config.vocab_size:
        raise UserError(
            f"{path} has {loaded.get_vocab_size()} tokens but the model of {checkpoint} only "
            f"{model.config.vocab_size}; the tokenizer does not match the checkpoint"
        )
    return model, loaded, config


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_sampling_args(args)
    model, tokenizer, _ = load_for_generation(args.checkpoint, args.device)
    sampling = {name: getattr(args, name) for name in SAMPLING_FLAGS}
    sampling |= {"vocab_size": tokenizer.get_vocab_size(), "stop_ids": tokenizer.stop_ids}
    if args.chat:
        chat(model, tokenizer, sampling, args.system)
    else:
        print(args.prompt, end="", flush=True)
        print_reply(generate(model, tokenizer.document(args.prompt), **sampling), tokenizer)


if __name__ == "__main__":
    run_cli(main)
