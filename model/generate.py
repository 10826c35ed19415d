r"""Generate text from a checkpoint: complete a prompt, or chat with a fine-tuned model.

    # continue a plain prompt (as a pre-training document: the model sees <|endoftext|> + prompt)
    python3 -m model.generate --checkpoint checkpoints/<run> --prompt "Once upon a time"

    # interactive multi-turn chat in our chat format, streamed token by token
    python3 -m model.generate --checkpoint checkpoints/<run> --chat --system "Be brief."

Tiny CPU example, after the README's sample pipeline:
    python3 -m model.generate --checkpoint checkpoints/sample_pre_training --prompt "The" \
        --max-new-tokens 40

Sampling: --temperature 0 is greedy; otherwise logits / temperature, then optional top-k and
top-p (nucleus) filtering. Generation stops at <|end|> (end of turn) or <|endoftext|> (end of
document), or after --max-new-tokens. Padded vocabulary ids (>= the tokenizer's vocab size)
are never sampled.

In Python (the training engine uses this for TensorBoard samples):
    for token_id in generate(model, prompt_ids, max_new_tokens=50, temperature=0.0): ...
    text = generate_text(model, tokenizer, "Once upon a time", max_new_tokens=50)

The decoding itself (KV cache rows, prefill, the batched decode step, CUDA graphs) is in
model/decoding.py and model/streams.py; model.serve puts it behind an HTTP API.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Iterator

import torch
from tokenizers import Tokenizer

from common.errors import ArgumentParser, UserError, run_cli
from model.checkpoint import load_model, unwrap_model
from model.decoding import Decoder
from model.streams import SEEDS, Sampling, Stream, StreamBatch, sample_next_token
from tokenizer.encoding import STOP_IDS, encode_document, encode_prompt, load_tokenizer

__all__ = ["STOP_IDS", "generate", "generate_text", "sample_next_token", "StreamDecoder"]


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
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield new token ids one at a time (batch of one); a stop id ends it and is not yielded.

    The model sees at most block_size tokens. With the cache (model/streams.py) each step costs
    one position, and when the cache is full the most recent block_size // 2 tokens are
    encoded again and generation goes on. Without it every step re-runs the last block_size
    tokens (the reference). Both give identical tokens while prompt + output fit in block_size.
    """
    sampling = Sampling(temperature, top_k, top_p, seed)
    stream = Stream(prompt_ids, max_new_tokens, sampling, stop_ids, vocab_size)
    if not use_cache:
        yield from generate_without_cache(unwrap_model(model), stream)
        return
    batch = StreamBatch(Decoder(model, batch_size=1))
    batch.add(stream)
    while batch.streams:
        for _, token in batch.step():
            if token is not None:
                yield token


def generate_without_cache(model: torch.nn.Module, stream: Stream) -> Iterator[int]:
    """The reference: every token runs the model over the last block_size tokens again."""
    device = next(model.parameters()).device
    generator = None
    if stream.sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(stream.sampling.seed)
    s = stream.sampling
    while stream.finish_reason is None and stream.max_new_tokens > 0:
        idx = torch.tensor([stream.tokens[-model.config.block_size :]], device=device)  # [1, T]
        logits = model(idx, last_only=True)[:, -1]  # [1, V_pad]
        vocab_size = stream.vocab_size or model.config.vocab_size
        token = sample_next_token(logits, vocab_size, s.temperature, s.top_k, s.top_p, generator)
        if stream.accept(int(token)) is not None:
            yield int(token)


def generate_text(
    model: torch.nn.Module, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, **kwargs
) -> str:
    """Continue a plain-text prompt (as a pre-training document); returns only the new text."""
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
        "--chat", action="store_true", help="interactive multi-turn chat (our chat format)"
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
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute the whole context for every token (slow; for checking the KV cache)",
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
        use_cache=not args.no_cache,
    )
    if args.chat:
        chat(model, tokenizer, sampling, args.system)
        return
    print(args.prompt, end="", flush=True)
    stream(generate(model, encode_document(tokenizer, args.prompt), **sampling), tokenizer)
    print()


if __name__ == "__main__":
    run_cli(main)
