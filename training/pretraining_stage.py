"""Pre-training: next-token prediction (training/stage.py's loss) on windows of block_size + 1
tokens of the corpus or mixture, at offsets drawn from default_rng([seed, step, micro_index]);
validation uses fixed windows evenly spaced over the validation split.
"""

from __future__ import annotations

import numpy as np
import torch

from common.errors import UserError
from model.generate import generate_text
from tokenizer.tokenized_data import TokenizedSplit
from training.data import EpochCounter, open_corpora
from training.stage import Batch, LanguageModelStage, RunContext

# Continued at each evaluation and logged as TensorBoard text (fits TinyStories and WikiText).
SAMPLE_PROMPTS = {"story": "Once upon a time", "article": "The history of the city"}


class WindowSampler:
    """Cuts (inputs, targets) windows out of one split's token array."""

    def __init__(self, split: TokenizedSplit, block_size: int, vocab_size: int):
        self.split, self.tokens = split, split.tokens
        self.block_size, self.vocab_size = block_size, vocab_size
        self.last_start = len(self.tokens) - (block_size + 1)  # largest valid window start
        if self.last_start < 0:
            raise UserError(
                f"{split.directory} holds {len(self.tokens)} tokens, fewer than one window of "
                f"block_size + 1 = {block_size + 1}; use more data or a smaller --block_size"
            )

    def windows(self, starts: np.ndarray) -> Batch:
        """{"inputs": [B, T], "targets": [B, T]} (int64) for window start offsets [B]."""
        rows = np.stack([self.tokens[s : s + self.block_size + 1] for s in starts.tolist()])
        if (largest := int(rows.max())) >= self.vocab_size:  # a cheap guard on damaged shards
            raise UserError(
                f"{self.split.directory}: token id {largest} near offset {int(starts[0])} is "
                f"outside the model's vocabulary ({self.vocab_size}); re-tokenize the data"
            )
        rows = torch.from_numpy(rows.astype(np.int64))  # [B, T+1]
        return {"inputs": rows[:, :-1], "targets": rows[:, 1:]}


class PretrainingStage(LanguageModelStage):
    name = "pre_training"

    def __init__(self, context: RunContext):
        super().__init__(context)
        config, vocab_size = context.config, context.model_config.vocab_size
        corpora = open_corpora(context, self.name, ("train", "validation"))
        self.train_windows, self.validation_windows = (
            [WindowSampler(c.splits[name], config.block_size, vocab_size) for c in corpora]
            for name in ("train", "validation")
        )
        self.mix(corpora)
        sizes = [len(windows.tokens) for windows in self.train_windows]
        self.epochs = EpochCounter(corpora, sizes, context.tokens_per_step, "tokens")
        if context.is_main:
            print(self.epochs.report(context.max_steps))

    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        config = self.context.config
        rng = np.random.default_rng([config.seed, step, micro_index])
        if self.mixture is None:
            (windows,) = self.train_windows
            return windows.windows(
                rng.integers(0, windows.last_start, config.micro_batch_size, endpoint=True)
            )
        first = (step * self.context.micro_batches_per_step + micro_index) * config.micro_batch_size
        corpus = self.mixture.corpus(np.arange(first, first + config.micro_batch_size))  # [B]
        highs = np.array([w.last_start for w in self.train_windows])[corpus]  # [B]
        starts = rng.integers(0, highs, endpoint=True)  # [B], each within its own corpus
        inputs = torch.empty(len(corpus), config.block_size, dtype=torch.int64)  # [B, T]
        targets = torch.empty_like(inputs)  # [B, T]
        for index, windows in enumerate(self.train_windows):
            if len(rows := np.flatnonzero(corpus == index)):
                part = windows.windows(starts[rows])
                inputs[rows], targets[rows] = part["inputs"], part["targets"]
        return {"inputs": inputs, "targets": targets}

    def validation_batches(self) -> list[Batch]:
        """eval_batches micro-batches per corpus, each tagged with its corpus in a mixture."""
        batches, size = [], self.context.config.micro_batch_size
        for index, windows in enumerate(self.validation_windows):
            count = self.context.config.eval_batches * size
            starts = np.linspace(0, windows.last_start, num=count).round().astype(np.int64)
            for first in range(0, len(starts), size):
                batch = windows.windows(starts[first : first + size])
                batches.append(self.validation_batch(batch, index))
        return batches

    def text_samples(self, model: torch.nn.Module) -> dict[str, str]:
        config, tokenizer = self.context.config, self.context.tokenizer
        max_new, vocab_size = config.sample_max_new_tokens, tokenizer.get_vocab_size()
        samples = {}
        for name, prompt in SAMPLE_PROMPTS.items() if max_new else ():
            sampling = dict(temperature=0.8, top_k=50, seed=config.seed, vocab_size=vocab_size)
            samples[name] = prompt + generate_text(model, tokenizer, prompt, max_new, **sampling)
        return samples
