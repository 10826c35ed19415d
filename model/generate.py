r"""Generate text from a checkpoint: complete a prompt, or chat with a fine-tuned model.

    # continue a plain prompt (pre_training profile: the model sees <|endoftext|> + prompt)
    python3 -m model.generate --checkpoint checkpoints/<run> --prompt "Once upon a time"

    # interactive multi-turn chat in the post_training_v1 template, streamed token by token
    python3 -m model.generate --checkpoint checkpoints/<run> --chat --system "Be brief."

Tiny CPU example, after the README's sample pipeline:
    python3 -m model.generate --checkpoint checkpoints/sample_pre_training --prompt "The" \
        --max-new-tokens 40

The one way to generate, used by this command, model.serve, the training samples and the
evaluation: a `Generator` decodes several streams at once, one row of a KV cache each, every
stream with its own sampling and stop ids; a finished stream frees its row for the next.

    generator = Generator(model, batch_size=8)           # compile=True: see below
    for stream, token in generator.run(streams):          # token None: the stream stopped
        ...                                               # generator.remove(stream) ends one
    for token_id in generate(model, prompt_ids, max_new_tokens=50, temperature=0.0): ...
    text = generate_text(model, tokenizer, "Once upon a time", max_new_tokens=50)

Prompts are prefilled one at a time (eagerly: their lengths vary); each decode step then runs
every busy row at once. With compile=True the decode step is compiled over the whole cache, so
its shapes never change (on CUDA mode="reduce-overhead" replays it as a CUDA graph): worth its
start-up time for a server on a GPU. A stream whose context outgrows the cache goes on from its
most recent block_size // 2 tokens.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from common.errors import ArgumentParser, UserError, run_cli
from model.checkpoint import load_model, unwrap_model
from model.kv_cache import KVCache
from tokenizer.profiles import STOP_IDS, encode_document, encode_prompt, load_tokenizer

SEEDS = range(-(1 << 63), 1 << 64)  # what torch.Generator.manual_seed takes


@dataclass
class Sampling:
    temperature: float = 1.0  # 0 = greedy (the most likely token)
    top_k: int | None = None  # sample among the k most likely tokens only
    top_p: float | None = None  # nucleus: the smallest set holding this much probability
    seed: int | None = None  # the same seed gives the same sample


def sample(
    logits: torch.Tensor, rows: list[Sampling], generators: list, vocab_size: int
) -> torch.Tensor:
    """One id per row of logits [n, V_pad], row i drawn with rows[i] and generators[i] (None:
    torch's default); ids [n], all < vocab_size."""
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


class Stream:
    """One sequence being generated: its tokens so far, how it samples, when it stops."""

    def __init__(
        self,
        prompt_ids: Iterable[int],
        max_new_tokens: int,
        sampling: Sampling | None = None,
        stop_ids: Iterable[int] = STOP_IDS,
    ):
        self.tokens = list(prompt_ids)  # the prompt, then every generated token
        if not self.tokens:
            raise ValueError("a stream needs at least one prompt token (e.g. <|endoftext|>)")
        self.prompt_length = len(self.tokens)
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling or Sampling()
        self.stop_ids = set(stop_ids)
        self.finish_reason: str | None = None  # "stop" (a stop id) or "length"
        self.next_token: int | None = None  # sampled, not yet taken
        self.row: int | None = None  # its row of the KV cache while it runs
        self.generator: torch.Generator | None = None  # its seed's, on the model's device

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_length :]

    def take_next_token(self) -> int | None:
        """The sampled token, or None when it is a stop id (which is not part of the output)."""
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

    def __init__(
        self,
        model: torch.nn.Module,
        batch_size: int = 1,
        vocab_size: int | None = None,
        compile: bool = False,
    ):
        self.model = unwrap_model(model)
        self.device = next(self.model.parameters()).device
        self.vocab_size = vocab_size or self.model.config.vocab_size
        self.cache = KVCache(self.model.config, batch_size)
        dtype = next(self.model.parameters()).dtype
        if torch.is_autocast_enabled(self.device.type):  # the keys come out in autocast's dtype
            dtype = torch.get_autocast_dtype(self.device.type)
        self.cache.allocate(self.device, dtype)
        self.rows: list[Stream | None] = [None] * batch_size
        self.compiled = compile
        self._step = self._decode_step
        if compile:  # fixed addresses: a CUDA graph reads and writes the cache in place
            for tensor in self.cache.keys + self.cache.values:
                torch._dynamo.mark_static_address(tensor)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._step = torch.compile(self._decode_step, mode=mode, fullgraph=True, dynamic=False)

    @property
    def streams(self) -> list[Stream]:
        """The streams running now."""
        return [stream for stream in self.rows if stream is not None]

    def has_room(self) -> bool:
        return None in self.rows

    @torch.no_grad()
    def add(self, stream: Stream) -> None:
        """Prefill the stream's prompt (its last max_length tokens) into a free row and sample
        its first token."""
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
            logits = self._decode(running)  # [rows decoded, V_pad]
            rows = torch.tensor([stream.row for stream in running], device=self.device)
            for stream, token in zip(running, self._sample(running, logits[rows])):
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
            while waiting and self.has_room():
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
        """A full row goes on from the stream's most recent max_length // 2 tokens: the ones
        before its next token are encoded again."""
        if self.cache.lengths[stream.row] >= self.cache.max_length:
            keep = max(2, self.cache.max_length // 2)
            self._prefill(stream.row, stream.tokens[-keep:-1])

    def _decode(self, running: list[Stream]) -> torch.Tensor:
        """Each running row's last token through the model: logits [rows, V_pad]. Eagerly the
        rows up to the last busy one; compiled, every row (idle ones decode at position 0)."""
        n = len(self.rows) if self.compiled else max(stream.row for stream in running) + 1
        tokens = [stream.tokens[-1] if stream else 0 for stream in self.rows[:n]]
        tokens = torch.tensor(tokens, device=self.device)  # [n]
        if self.compiled:
            positions = torch.tensor(self.cache.lengths, device=self.device)  # [n]
            if self.device.type == "cuda":  # the last step's logits (graph outputs) are used
                torch.compiler.cudagraph_mark_step_begin()
            logits = self._step(tokens, positions)
        else:
            logits = self.model(tokens[:, None], self.cache.rows(0, n), last_only=True)[:, -1]
        for stream in running:
            self.cache.lengths[stream.row] += 1
        return logits

    def _decode_step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The compiled step: tokens [B] at positions [B] -> logits [B, V_pad]."""
        return self.model(tokens[:, None], self.cache, last_only=True, positions=positions)[:, -1]

    def _sample(self, streams: list[Stream], logits: torch.Tensor) -> list[int]:
        rows = [stream.sampling for stream in streams]
        generators = [stream.generator for stream in streams]
        return sample(logits, rows, generators, self.vocab_size).tolist()


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Iterable[int] = STOP_IDS,
    seed: int | None = None,
    vocab_size: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time (a batch of one); a stop id ends it and is not yielded."""
    stream = Stream(prompt_ids, max_new_tokens, Sampling(temperature, top_k, top_p, seed), stop_ids)
    for _, token in Generator(model, vocab_size=vocab_size).run([stream]):
        if token is not None:
            yield token


def generate_text(
    model: torch.nn.Module, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, **kwargs
) -> str:
    """Continue a plain-text prompt (pre_training profile); returns only the new text."""
    ids = list(generate(model, encode_document(tokenizer, prompt), max_new_tokens, **kwargs))
    return tokenizer.decode(ids)


class StreamDecoder:
    """Turns a stream of token ids into printable text without splitting a UTF-8 character.

    Byte-level BPE tokens can end mid-character (an emoji may span several tokens); decoding
    such a prefix yields U+FFFD. We hold those tokens back until their character is complete,
    and decode only them (byte-level decoding of complete characters concatenates), so a long
    reply costs each token one small decode, not a decode of everything so far.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.pending: list[int] = []  # ids whose text is not yet complete

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
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

    def text(self) -> str:
        return self.tokenizer.decode(self.ids)


def stream(tokens: Iterator[int], tokenizer: Tokenizer, out=None) -> str:
    """Print tokens as they are generated (to stdout by default); return the decoded text."""
    out = out or sys.stdout
    decoder = StreamDecoder(tokenizer)
    for token_id in tokens:
        out.write(decoder.push(token_id))
        out.flush()
    out.write(decoder.finish())
    out.flush()
    return decoder.text()


def chat(model, tokenizer: Tokenizer, sampling: dict, system: str | None, input_fn=input) -> None:
    """Read user turns until EOF or `/quit` (empty lines are skipped); `/reset` clears the
    history."""
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    block = unwrap_model(model).config.block_size
    print("chat: type a message; /reset clears the history; /quit or Ctrl-D ends.")
    while True:
        try:
            user_text = input_fn("user> ")
        except EOFError:
            print()
            return
        if not user_text.strip():
            continue
        if user_text.strip() == "/quit":
            return
        if user_text.strip() == "/reset":
            messages = list(base)
            print("(history cleared)")
            continue
        messages.append({"role": "user", "content": user_text})
        prompt_ids = encode_prompt(tokenizer, messages)
        if len(prompt_ids) >= block:
            print(f"(conversation is {len(prompt_ids)} tokens; the model sees the last {block})")
        print("assistant> ", end="", flush=True)
        reply = stream(generate(model, prompt_ids, **sampling), tokenizer)
        print()
        messages.append({"role": "assistant", "content": reply})


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python3 -m model.generate",
        description="Complete a prompt or chat with a trained checkpoint.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="run folder (follows its `latest`) or step folder, e.g. checkpoints/sample_sft",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prompt", help="text to continue (encoded as <|endoftext|> + text)")
    mode.add_argument(
        "--chat", action="store_true", help="interactive multi-turn chat (post_training_v1)"
    )
    parser.add_argument("--system", default=None, help="system message for --chat")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="most tokens to generate per reply (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="softmax temperature; 0 = greedy, the most likely token (default: %(default)s)",
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="sample only among the k most likely tokens"
    )
    parser.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="nucleus sampling: smallest set of tokens holding this probability mass (0, 1]",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed (same seed, same sample)"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)"
    )
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


def load_for_generation(checkpoint: str, device: str | None) -> tuple[torch.nn.Module, Tokenizer]:
    """The checkpoint's model (eval mode, on `device`, default cuda when there is one) and its
    tokenizer, or a one-line UserError (also used by model.serve)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UserError(f"--device {device}: not a device (cpu, cuda, cuda:1 ...)") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available()}
    available["mps"] = torch.backends.mps.is_available()  # Apple silicon
    if not available.get(kind, False):
        raise UserError(f"--device {device}: {kind} is not available here; use --device cpu")
    model, _, tokenizer_path = load_model(checkpoint, device=device)
    if tokenizer_path is None:
        raise UserError(f"{checkpoint} has no tokenizer.json next to its weights")
    tokenizer = load_tokenizer(tokenizer_path)
    if tokenizer.get_vocab_size() > model.config.vocab_size:
        raise UserError(
            f"{tokenizer_path} has {tokenizer.get_vocab_size()} tokens but the model only "
            f"{model.config.vocab_size}; the checkpoint is inconsistent"
        )
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_sampling_args(args)
    model, tokenizer = load_for_generation(args.checkpoint, args.device)
    sampling = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        vocab_size=tokenizer.get_vocab_size(),
    )
    if args.chat:
        chat(model, tokenizer, sampling, args.system)
        return
    print(args.prompt, end="", flush=True)
    stream(generate(model, encode_document(tokenizer, args.prompt), **sampling), tokenizer)
    print()


if __name__ == "__main__":
    run_cli(main)
