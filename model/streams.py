"""Generation streams: how each one samples and stops, and several decoded as one batch.

    batch = StreamBatch(Decoder(model, batch_size=8))
    stream = Stream(prompt_ids, max_new_tokens=100, sampling=Sampling(temperature=0.7, seed=1))
    batch.add(stream)                      # prefills its prompt into a free row of the cache
    while batch.streams:
        for stream, token in batch.step():  # one token for every stream, then one decode step
            ...                             # token None: it stopped; stream.finish_reason says why

model.generate runs one stream this way, model.serve several. A stream finishes at a stop id
(finish_reason "stop"; the stop id is not part of the output) or after max_new_tokens
("length"), and then leaves its row to the next stream.

The model sees at most block_size tokens. A longer prompt keeps its last block_size tokens; when
a stream's row is full, its most recent block_size // 2 tokens are encoded again into an empty
row and generation goes on from there (each step still costs one position).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from model.decoding import Decoder

SEEDS = range(-(1 << 63), 1 << 64)  # what torch.Generator.manual_seed takes


@dataclass
class Sampling:
    temperature: float = 1.0  # 0 = greedy (the most likely token)
    top_k: int | None = None  # sample among the k most likely tokens only
    top_p: float | None = None  # nucleus: the smallest set holding this much probability
    seed: int | None = None  # the same seed gives the same sample


def sample_next_token(
    logits: torch.Tensor,
    vocab_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one id per row of logits [B, V_pad]; returns ids [B] (all < vocab_size).

    temperature 0 = greedy (argmax); top_k / top_p None = no filtering.
    """
    logits = logits[:, :vocab_size].float()  # [B, V]: padded ids are not tokens
    if temperature == 0:
        # max(), not argmax(): the same first index on ties, twice as fast on CPU
        return logits.max(dim=-1).indices
    # from the row's largest logit: a tiny temperature then sends the rest to -inf, not to
    # inf - inf = nan (softmax does not care where it starts)
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < vocab_size:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_ids = torch.sort(logits, dim=-1, descending=True)  # [B, V]
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass, but
        # always keep the most likely one (a top_p that rounds to 0 in float32 would drop all)
        mass_above = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = mass_above >= top_p
        drop_sorted[:, 0] = False
        drop = drop_sorted.scatter(-1, sorted_ids, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


class ToHost:
    """A GPU tensor's values copied to the host without waiting for the work queued after
    the copy (a plain .tolist() would wait for the whole stream, the next decode step too)."""

    def __init__(self, tensor: torch.Tensor):
        self.values, self.copied = tensor, None
        if tensor.is_cuda:
            self.values = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.values.copy_(tensor, non_blocking=True)
            self.copied = torch.cuda.Event()
            self.copied.record(torch.cuda.current_stream(tensor.device))  # where the copy runs

    def tolist(self) -> list:
        if self.copied is not None:
            self.copied.synchronize()  # the copy only, not what was queued after it
        return self.values.tolist()


class Stream:
    """One sequence being generated: its tokens so far, how it samples, when it stops."""

    def __init__(
        self,
        prompt_ids: Iterable[int],
        max_new_tokens: int,
        sampling: Sampling | None = None,
        stop_ids: Iterable[int] = (),
        vocab_size: int | None = None,
    ):
        self.tokens = list(prompt_ids)  # the prompt, then every generated token
        if not self.tokens:
            raise ValueError("a stream needs at least one prompt token (e.g. <|endoftext|>)")
        self.prompt_length = len(self.tokens)
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling or Sampling()
        self.stop_ids = set(stop_ids)
        self.vocab_size = vocab_size  # None: the model's
        self.generator: torch.Generator | None = None  # made on the model's device by add()
        self.finish_reason: str | None = None  # "stop" or "length" once finished

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_length :]

    @property
    def takes_last_token(self) -> bool:
        """Whatever token comes next, the stream ends with it (no decode step needed after)."""
        return len(self.tokens) - self.prompt_length + 1 >= self.max_new_tokens

    def accept(self, token: int) -> int | None:
        """Take a sampled token; returns it, or None when it is a stop id."""
        if token in self.stop_ids:
            self.finish_reason = "stop"
            return None
        self.tokens.append(token)
        if len(self.tokens) - self.prompt_length >= self.max_new_tokens:
            self.finish_reason = "length"
        return token


class StreamBatch:
    """Streams decoded together, stream i in row i of the decoder's KV cache."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        self.streams: list[Stream] = []
        self.logits: torch.Tensor | None = None  # [n, V_pad] each stream's next-token logits

    def has_room(self) -> bool:
        return len(self.streams) < self.decoder.batch_size

    def add(self, stream: Stream) -> None:
        """Prefill the stream's prompt into the next free row."""
        if not self.has_room():
            raise ValueError("every row of the decoder is busy")
        if stream.max_new_tokens <= 0:
            stream.finish_reason = "length"
            return
        decoder, row = self.decoder, len(self.streams)
        if stream.sampling.seed is not None:
            stream.generator = torch.Generator(device=decoder.device)
            stream.generator.manual_seed(stream.sampling.seed)
        logits = decoder.prefill(row, stream.tokens[-decoder.max_length :])[None]  # [1, V_pad]
        self._make_room(row, stream)
        self.streams.append(stream)
        self.logits = logits if self.logits is None else torch.cat((self.logits, logits))

    def step(self) -> list[tuple[Stream, int | None]]:
        """Sample a token for every stream, decode them, retire the streams that finished.

        The decode step is queued before the sampled ids are read on the host, and their copy
        to the host before the decode step, so on a GPU the step runs while Python handles the
        tokens. A stream that then turns out to have stopped wasted one position of its row,
        which it leaves.
        """
        sampled = self._sample()  # [n], on the model's device
        sampled_ids = ToHost(sampled)  # queued before the decode step: reading needs no wait
        if not all(stream.takes_last_token for stream in self.streams):
            self.logits = self.decoder.step(sampled)  # [n, V_pad]
        events = []
        for stream, token in zip(self.streams, sampled_ids.tolist()):
            events.append((stream, stream.accept(token)))
        finished = [row for row, stream in enumerate(self.streams) if stream.finish_reason]
        for row in reversed(finished):
            self.remove(self.streams[row])
        for row, stream in enumerate(self.streams):
            self._make_room(row, stream)
        return events

    def remove(self, stream: Stream) -> None:
        """Take a stream out (finished, cancelled); the last row moves into its place."""
        row, last = self.streams.index(stream), len(self.streams) - 1
        self.decoder.move(last, row)
        self.streams[row] = self.streams[last]
        self.streams.pop()
        if self.logits is not None:
            self.logits[row] = self.logits[last]
            self.logits = self.logits[:last] if last else None

    def _sample(self) -> torch.Tensor:
        """The next token of every stream [n], each with its own settings and generator."""
        vocab_size = self.decoder.config.vocab_size
        limits = {stream.vocab_size or vocab_size for stream in self.streams}
        first = self.streams[0].sampling
        if len(limits) == 1:  # one call for every row, when the rows sample alike
            if all(stream.sampling.temperature == 0 for stream in self.streams):
                return sample_next_token(self.logits, limits.pop(), temperature=0)
            # unseeded rows with the same settings: independent draws, no generator to follow
            if first.seed is None and all(s.sampling == first for s in self.streams):
                return sample_next_token(
                    self.logits, limits.pop(), first.temperature, first.top_k, first.top_p
                )
        return torch.cat(
            [
                sample_next_token(
                    self.logits[row : row + 1],
                    stream.vocab_size or vocab_size,
                    stream.sampling.temperature,
                    stream.sampling.top_k,
                    stream.sampling.top_p,
                    stream.generator,
                )
                for row, stream in enumerate(self.streams)
            ]
        )

    def _make_room(self, row: int, stream: Stream) -> None:
        """A full row keeps its stream's last max(1, max_length // 2) - 1 tokens, so the next
        token is decoded after the most recent half of the context."""
        decoder = self.decoder
        if decoder.length(row) < decoder.max_length:
            return
        keep = max(1, decoder.max_length // 2) - 1
        decoder.prefill(row, stream.tokens[-keep:] if keep else [])
