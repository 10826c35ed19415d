"""Encode one batch of raw rows for `tokenize_dataset`, for any of the three stages.

This runs inside the worker processes, so it imports neither `datasets` nor anything heavy, and
it returns compact numpy arrays (cheap to send back to the writer process). Conversations are
rendered by `tokenizer.encoding.chat_pieces`, the contents of a whole batch are encoded with one
`encode_batch_fast` call (no character offsets: we only need ids), and `pieces_to_ids` puts
them back between the special tokens; tests check this agrees token for token with
`encode_conversation`, `encode_prompt` and `encode_response`.

Policies applied here, each counted in the returned stats:
- pre_training: rows whose text is empty or not a string are skipped.
- sft: malformed conversations are skipped; conversations longer than
  `max_length` are truncated (`overlong="truncate"`) or dropped (`"drop"`); a conversation with
  no trainable (assistant) token left is dropped.
- dpo: a pair whose prompt alone has `max_length` tokens or more is dropped. When
  prompt + the longer response exceed `max_length`, `"drop"` drops the pair, `"truncate"` first
  cuts a prompt longer than `max_prompt_length` to its leading `<|endoftext|>` plus its last
  tokens (the end of a prompt, with the question and `<|assistant|>`, matters most), then cuts
  both responses to the room left (a cut response loses its final `<|end|>`). Pairs whose
  chosen and rejected tokens are identical carry no preference and are dropped.
"""

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from tokenizer.encoding import (
    BOS_ID,
    ROLE_TOKENS,
    chat_pieces,
    content_texts,
    pieces_to_ids,
    response_pieces,
)
from tokenizer.encoding import load_tokenizer as _load_tokenizer
from tokenizer.tokenized_data import token_dtype


@dataclass
class EncodedBatch:
    """The documents (or DPO pairs) kept from one batch of rows, flattened."""

    tokens: np.ndarray  # (sum of lengths,) token ids, every kept document back to back
    lengths: np.ndarray  # (num_docs,) tokens per document, or (num_pairs, 3) prompt/chosen/rejected
    source_rows: np.ndarray  # (num_docs,) index of each kept document's row in the raw split
    num_rows: int = 0  # raw rows this batch covered, kept or not
    mask: np.ndarray | None = None  # (sum of lengths,) uint8 loss mask, sft only
    stats: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class EncodeSettings:
    tokenizer_path: str
    stage: str  # pre_training, sft or dpo
    max_length: int | None = None  # sft and dpo only
    overlong: str = "truncate"  # "truncate" or "drop"
    max_prompt_length: int | None = None  # dpo only


def is_message(message) -> bool:
    return (
        isinstance(message, dict)
        and message.get("role") in ROLE_TOKENS
        and isinstance(message.get("content"), str)
    )


def is_conversation(messages) -> bool:
    return isinstance(messages, list) and bool(messages) and all(map(is_message, messages))


def is_single_reply(messages) -> bool:
    return is_conversation(messages) and len(messages) == 1 and messages[0]["role"] == "assistant"


class BatchEncoder:
    """Holds the tokenizer and settings; `encode(first_row, rows)` turns rows into arrays."""

    def __init__(self, settings: EncodeSettings):
        self.settings = settings
        self.tokenizer = _load_tokenizer(settings.tokenizer_path)
        self.dtype = token_dtype(self.tokenizer.get_vocab_size())

    def encode(self, first_row: int, rows: dict[str, list]) -> EncodedBatch:
        stage = self.settings.stage
        if stage == "pre_training":
            return self._pre_training(first_row, rows["text"])
        if stage == "sft":
            return self._sft(first_row, rows["messages"])
        return self._dpo(first_row, rows["prompt"], rows["chosen"], rows["rejected"])

    def _ids(self, texts: list[str]) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def _flat(self, pieces: list[list[int]], total: int) -> np.ndarray:
        return np.fromiter(chain.from_iterable(pieces), self.dtype, total)

    def _pre_training(self, first_row: int, texts: list) -> EncodedBatch:
        stats = Counter(rows_in=len(texts))
        kept_rows, kept_texts = [], []
        for offset, text in enumerate(texts):
            if not isinstance(text, str):
                stats["skipped_not_a_string"] += 1
            elif not text:
                stats["skipped_empty"] += 1
            else:
                kept_rows.append(first_row + offset)
                kept_texts.append(text)
        ids = self._ids(kept_texts)
        lengths = np.fromiter(map(len, ids), np.int64, len(ids)) + 1  # +1: <|endoftext|>
        pieces = chain.from_iterable(([BOS_ID], doc) for doc in ids)
        stats["documents"] = len(ids)
        stats["text_bytes"] = sum(len(text.encode("utf-8")) for text in kept_texts)
        return EncodedBatch(
            tokens=self._flat(pieces, int(lengths.sum())),
            lengths=lengths,
            source_rows=np.asarray(kept_rows, np.uint64),
            num_rows=len(texts),
            stats=stats,
        )

    def _sft(self, first_row: int, conversations: list) -> EncodedBatch:
        max_length, overlong = self.settings.max_length, self.settings.overlong
        stats = Counter(conversations_in=len(conversations))
        valid = []
        for offset, messages in enumerate(conversations):
            if is_conversation(messages):
                valid.append((first_row + offset, messages))
            else:
                stats["skipped_malformed"] += 1
        rendered = [chat_pieces(messages) for _, messages in valid]
        contents = iter(self._ids([text for pieces in rendered for text in content_texts(pieces)]))
        docs, masks, kept_rows = [], [], []
        for (row, _), pieces in zip(valid, rendered):
            ids, mask = pieces_to_ids(pieces, contents)
            if not any(mask):
                stats["dropped_no_assistant_turn"] += 1
                continue
            if len(ids) > max_length:
                if overlong == "drop":
                    stats["dropped_overlong"] += 1
                    continue
                ids, mask = ids[:max_length], mask[:max_length]
                if not any(mask):
                    stats["dropped_no_trainable_token_after_truncation"] += 1
                    continue
                stats["truncated"] += 1
            docs.append(ids)
            masks.append(mask)
            kept_rows.append(row)
        lengths = np.fromiter(map(len, docs), np.int64, len(docs))
        total = int(lengths.sum())
        mask_array = np.fromiter(chain.from_iterable(masks), np.uint8, total)
        stats["documents"] = len(docs)
        stats["trainable_tokens"] = int(mask_array.sum(dtype=np.int64))
        return EncodedBatch(
            tokens=self._flat(docs, total),
            lengths=lengths,
            source_rows=np.asarray(kept_rows, np.uint64),
            num_rows=len(conversations),
            mask=mask_array,
            stats=stats,
        )

    def _dpo(self, first_row: int, prompts: list, chosens: list, rejecteds: list) -> EncodedBatch:
        stats = Counter(pairs_in=len(prompts))
        valid = []
        for offset, triple in enumerate(zip(prompts, chosens, rejecteds)):
            prompt, chosen, rejected = triple
            if is_conversation(prompt) and is_single_reply(chosen) and is_single_reply(rejected):
                valid.append((first_row + offset, prompt, chosen, rejected))
            else:
                stats["skipped_malformed"] += 1
        rendered = [
            (chat_pieces(prompt, add_generation_prompt=True),
             response_pieces(chosen[0]["content"]), response_pieces(rejected[0]["content"]))
            for _, prompt, chosen, rejected in valid
        ]  # fmt: skip
        texts = [text for parts in rendered for pieces in parts for text in content_texts(pieces)]
        contents = iter(self._ids(texts))
        kept, kept_rows = [], []
        for (row, *_), parts in zip(valid, rendered):
            prompt_ids, chosen_ids, rejected_ids = (pieces_to_ids(p, contents)[0] for p in parts)
            fitted = self._fit_pair(prompt_ids, chosen_ids, rejected_ids, stats)
            if fitted is None:
                continue
            triple, cuts = fitted
            if triple[1] == triple[2]:
                stats["dropped_identical"] += 1
                continue
            stats.update(cuts)  # truncations are counted for the pairs kept
            kept.append(triple)
            kept_rows.append(row)
        lengths = np.array([[len(part) for part in triple] for triple in kept], np.int64)
        lengths = lengths.reshape(len(kept), 3)  # (num_pairs, 3) even when empty
        stats["pairs"] = len(kept)
        return EncodedBatch(
            tokens=self._flat(chain.from_iterable(kept), int(lengths.sum())),
            lengths=lengths,
            source_rows=np.asarray(kept_rows, np.uint64),
            num_rows=len(prompts),
            stats=stats,
        )

    def _fit_pair(self, prompt, chosen, rejected, stats):
        """Apply the DPO truncation policy (module docstring): ((prompt, chosen, rejected),
        truncation counts), or None when the pair is dropped (counted in `stats`)."""
        max_length = self.settings.max_length
        if len(prompt) >= max_length:
            stats["dropped_prompt_fills_context"] += 1
            return None
        cuts = Counter()
        if len(prompt) + max(len(chosen), len(rejected)) <= max_length:
            return (prompt, chosen, rejected), cuts
        if self.settings.overlong == "drop":
            stats["dropped_overlong"] += 1
            return None
        keep = self.settings.max_prompt_length
        if len(prompt) > keep:
            prompt = [BOS_ID] + prompt[len(prompt) - (keep - 1) :]  # the leading BOS + the end
            cuts["prompts_truncated"] += 1
        room = max_length - len(prompt)
        if max(len(chosen), len(rejected)) > room:
            cuts["responses_truncated"] += 1
        return (prompt, chosen[:room], rejected[:room]), cuts


# One encoder per worker process, made once by the pool initializer.
_worker_encoder: BatchEncoder | None = None


def init_worker(settings: EncodeSettings) -> None:
    import os
    import signal

    # Ctrl-C reaches the whole process group: the parent handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One thread per worker: parallelism comes from the number of processes.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _worker_encoder
    _worker_encoder = BatchEncoder(settings)


def encode_in_worker(first_row: int, rows: dict[str, list]) -> EncodedBatch:
    return _worker_encoder.encode(first_row, rows)
