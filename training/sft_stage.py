"""SFT: whole conversations packed into rows of block_size + 1 tokens, the loss on the assistant's
tokens only (the tokenized loss mask).

Each epoch shuffles the conversations (seeded by (seed, epoch)) and packs them in that order:
one goes into the current row if it fits whole, else the row is padded and a new one begins.
Attention may cross the conversations of a row (plain causal attention keeps the fast kernels;
each conversation starts as its chat template starts it: ours with `<|endoftext|>`). Row r of
the run is a pure function of (seed, r). A mixture interleaves its corpora's rows by weight
(training/data.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.errors import UserError
from model.generate import generate
from tokenizer.tokenized_data import TokenizedSplit
from training.config import TrainConfig, option
from training.data import EpochCounter, open_corpora
from training.stage import IGNORE_INDEX, Batch, LanguageModelStage, RunContext


@dataclass(kw_only=True)
class SFTConfig(TrainConfig):
    """TrainConfig plus the held-out split that SFT and DPO score and answer from."""

    eval_split: str = option("held-out split for validation loss and text samples")
    num_text_samples: int = option("held-out prompts answered at each evaluation", at_least=0)


def next_fit_rows(lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Start index (into `lengths`) of each packed row, plus a final len(lengths)."""
    starts, used = [0], 0
    for index, length in enumerate(lengths.tolist()):
        if used + length > capacity:
            starts.append(index)
            used = 0
        used += length
    return np.asarray([*starts, len(lengths)], np.int64)


class PackedSFTData:
    """Packed rows over one tokenized sft split (memory-mapped, read lazily)."""

    def __init__(
        self, split: TokenizedSplit, block_size: int, seed: int, pad_id: int, shuffle: bool = True
    ):
        self.split, self.block_size, self.seed, self.shuffle = split, block_size, seed, shuffle
        self.pad_id = pad_id  # fills a row's end: never a target
        offsets = np.asarray(split.doc_offsets, np.int64)
        starts, lengths = offsets[:-1], np.diff(offsets)
        truncated = lengths > block_size + 1
        lengths = np.minimum(lengths, block_size + 1)
        # useful only if a position after the conversation's first token is trained
        trained = np.zeros(len(starts), bool)
        for k, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
            trained[k] = split.loss_mask[start + 1 : start + length].any()
        self.starts, self.lengths = starts[trained], lengths[trained]
        self.stats = {
            "conversations": len(lengths),
            "truncated_to_block": int(truncated.sum()),
            "skipped_no_trained_tokens": int((~trained).sum()),
        }
        if len(self.starts) == 0:
            raise UserError(
                f"{split.directory}: no conversation has an assistant token to train "
                f"on ({self.stats}); check the SFT data and its tokenization"
            )
        self.epoch_rows: list[int] = []  # rows of each epoch packed so far
        self.packed = (-1, np.empty(0, np.int64), np.empty(0, np.int64))

    def pack(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(conversation order, row starts into that order) of one epoch (the last one kept)."""
        if self.packed[0] != epoch:
            order = np.arange(len(self.starts))
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(len(self.starts))
            self.packed = (epoch, order, next_fit_rows(self.lengths[order], self.block_size + 1))
        return self.packed[1], self.packed[2]

    def rows_in_epoch(self, epoch: int) -> int:
        while len(self.epoch_rows) <= epoch:
            self.epoch_rows.append(len(self.pack(len(self.epoch_rows))[1]) - 1)
        return self.epoch_rows[epoch]

    def fill_fraction(self) -> float:
        """Share of epoch 0's row positions that hold conversation tokens (not padding)."""
        return float(self.lengths.sum()) / (self.rows_in_epoch(0) * (self.block_size + 1))

    def row(self, global_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and loss mask [block_size + 1] of a row counted from the run's start."""
        epoch = 0
        while global_row >= self.rows_in_epoch(epoch):
            global_row, epoch = global_row - self.rows_in_epoch(epoch), epoch + 1
        order, row_starts = self.pack(epoch)
        tokens = np.full(self.block_size + 1, self.pad_id, np.int64)
        mask = np.zeros(self.block_size + 1, np.uint8)
        used = 0
        for conversation in order[row_starts[global_row] : row_starts[global_row + 1]].tolist():
            start, length = int(self.starts[conversation]), int(self.lengths[conversation])
            tokens[used : used + length] = self.split.tokens[start : start + length]
            mask[used : used + length] = self.split.loss_mask[start : start + length]
            used += length
        return tokens, mask

    def batch(self, first_row: int, batch_size: int) -> Batch:
        return rows_to_batch([self.row(first_row + i) for i in range(batch_size)])


def rows_to_batch(rows: list[tuple[np.ndarray, np.ndarray]]) -> Batch:
    """{"inputs", "targets"} [B, block_size] from B packed rows (tokens, loss mask)."""
    tokens = torch.from_numpy(np.stack([r[0] for r in rows]))  # [B, block_size + 1]
    mask = torch.from_numpy(np.stack([r[1] for r in rows])).bool()  # [B, block_size + 1]
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], IGNORE_INDEX)  # [B, T]
    return {"inputs": tokens[:, :-1].contiguous(), "targets": targets.contiguous()}


class SFTStage(LanguageModelStage):
    name = "sft"

    def __init__(self, context: RunContext):
        super().__init__(context)
        config = context.config
        corpora = open_corpora(context, self.name, ("train", config.eval_split))
        block, seed, pad = config.block_size, config.seed, context.tokenizer.pad_id
        self.train_data = [PackedSFTData(c.splits["train"], block, seed, pad) for c in corpora]
        held_out = [corpus.splits[config.eval_split] for corpus in corpora]
        self.eval_data = [PackedSFTData(s, block, seed, pad, shuffle=False) for s in held_out]
        self.eval_split = corpora[0].splits[config.eval_split]
        self.mix(corpora)
        rows_per_step = context.micro_batches_per_step * config.micro_batch_size
        sizes = [data.rows_in_epoch(0) for data in self.train_data]
        self.epochs = EpochCounter(corpora, sizes, rows_per_step, "packed rows")
        if context.is_main:
            for corpus, train, held_out in zip(corpora, self.train_data, self.eval_data):
                where = f" {corpus.path}" if self.mixture is not None else ""
                print(
                    f"sft data{where}: train {train.stats}, {train.rows_in_epoch(0)} packed "
                    f"rows per epoch ({train.fill_fraction():.0%} tokens, the rest padding); "
                    f"{config.eval_split} {held_out.stats}"
                )
            print(self.epochs.report(context.max_steps))

    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        size = self.context.config.micro_batch_size
        first = (step * self.context.micro_batches_per_step + micro_index) * size
        if self.mixture is None:
            return self.train_data[0].batch(first, size)
        slots = np.arange(first, first + size)
        rows = zip(self.mixture.corpus(slots).tolist(), self.mixture.rank(slots).tolist())
        return rows_to_batch([self.train_data[c].row(r) for c, r in rows])

    def validation_batches(self) -> list[Batch]:
        """Up to eval_batches micro-batches per corpus, tagged with its corpus in a mixture."""
        batches, size = [], self.context.config.micro_batch_size
        for index, data in enumerate(self.eval_data):
            rows = data.rows_in_epoch(0)
            for first in range(0, rows, size)[: self.context.config.eval_batches]:
                batch = data.batch(first, min(size, rows - first))
                batches.append(self.validation_batch(batch, index))
        return batches

    def text_samples(self, model: torch.nn.Module) -> dict[str, str]:
        config = self.context.config
        count = min(config.num_text_samples, self.eval_split.meta["num_documents"])
        keep = max(1, config.block_size - config.sample_max_new_tokens)  # room for the answer
        prompts = [first_assistant_prompt(self.eval_split, i)[-keep:] for i in range(count)]
        return answer_samples(model, self.context.tokenizer, prompts, config.sample_max_new_tokens)


def first_assistant_prompt(split: TokenizedSplit, index: int) -> list[int]:
    """Conversation `index` up to its first trained token (a prompt that opens the answer)."""
    ids = np.asarray(split.document(index), np.int64)
    mask = np.asarray(split.loss_mask[int(split.doc_offsets[index]) :][: len(ids)])
    trained = np.flatnonzero(mask)
    return ids[: int(trained[0])].tolist() if len(trained) else ids.tolist()


def greedy_answer(model, tokenizer, prompt: list[int], max_new_tokens: int) -> str:
    """The model's greedy answer to a prompt's token ids, up to a stop token."""
    stops, vocab_size = tokenizer.stop_ids, tokenizer.get_vocab_size()
    answer = generate(model, prompt, max_new_tokens, 0.0, stop_ids=stops, vocab_size=vocab_size)
    return tokenizer.decode(list(answer))


def answer_samples(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> dict:
    """{"answer_k": markdown}: each prompt with its role tokens, then the greedy answer."""
    samples = {}
    for index, prompt in enumerate(prompts if max_new_tokens else []):
        samples[f"answer_{index}"] = (
            f"**prompt:** `{tokenizer.decode(prompt, skip_special_tokens=False)}`\n\n"
            f"**answer:** {greedy_answer(model, tokenizer, prompt, max_new_tokens)}"
        )
    return samples
