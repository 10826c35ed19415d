"""The pre-training stage: next-token prediction on windows of the tokenized corpus, or of a
weighted mixture of corpora (training/pretraining_data.py, training/data_mixture.py); the loss
is training/language_model_stage.py's. At the start it prints how many times the run reads
each corpus (training/epochs.py)."""

from __future__ import annotations

import numpy as np
import torch

from model.generate import generate_text
from training.data_mixture import Interleave, open_corpora
from training.epochs import EpochCounter
from training.language_model_stage import LanguageModelStage
from training.pretraining_data import WindowSampler, mixed_windows
from training.stage import Batch, RunContext

# Continued at each evaluation and logged as TensorBoard text (fits TinyStories and WikiText).
SAMPLE_PROMPTS = {
    "story": "Once upon a time",
    "article": "The history of the city",
}


class PretrainingStage(LanguageModelStage):
    name = "pre_training"

    def __init__(self, context: RunContext):
        super().__init__(context)
        config = context.config
        vocab_size = context.model_config.vocab_size
        corpora = open_corpora(
            config.data_dir, "pre_training", context.tokenizer_sha256, vocab_size
        )
        self.train_windows, self.validation_windows = (
            [WindowSampler(c.splits[name], config.block_size, vocab_size) for c in corpora]
            for name in ("train", "validation")
        )
        weights = [corpus.spec.weight for corpus in corpora]
        self.mixture = Interleave(weights) if len(corpora) > 1 else None
        if self.mixture is not None:
            self.corpus_tags = tuple(corpus.name for corpus in corpora)
        self.epochs = EpochCounter(
            names=[corpus.spec.path for corpus in corpora],
            weights=weights,
            sizes=[len(windows.tokens) for windows in self.train_windows],
            units_per_step=context.tokens_per_step,
            unit="tokens",
            tags=[corpus.name for corpus in corpora],
        )
        if context.is_main:
            print("\n".join(self.epochs.report(context.max_steps)))
        self.batch_size = config.micro_batch_size
        self.eval_batches = config.eval_batches
        self.seed = config.seed
        self.tokenizer = context.tokenizer
        self.sample_max_new_tokens = config.sample_max_new_tokens

    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        if self.mixture is None:
            (windows,) = self.train_windows
            starts = windows.random_starts(self.batch_size, self.seed, step, micro_index)
            return windows.windows(starts)
        first = (step * self.context.micro_batches_per_step + micro_index) * self.batch_size
        corpus = self.mixture.corpus(np.arange(first, first + self.batch_size))
        rng = np.random.default_rng([self.seed, step, micro_index])
        return mixed_windows(self.train_windows, corpus, rng)

    def validation_batches(self) -> list[Batch]:
        """eval_batches micro-batches per corpus, each tagged with its corpus in a mixture."""
        batches = []
        for index, windows in enumerate(self.validation_windows):
            starts = windows.evenly_spaced_starts(self.eval_batches * self.batch_size)
            for first in range(0, len(starts), self.batch_size):
                part = starts[first : first + self.batch_size]
                batch = self.with_target_bytes(windows.windows(part))
                if self.mixture is not None:
                    batch["corpus"] = torch.full((len(batch["inputs"]),), index)  # [B]
                batches.append(batch)
        return batches

    def text_samples(self, model) -> dict[str, str]:
        if self.sample_max_new_tokens == 0:
            return {}
        return {
            name: prompt
            + generate_text(
                model,
                self.tokenizer,
                prompt,
                self.sample_max_new_tokens,
                temperature=0.8,
                top_k=50,
                seed=self.seed,
                vocab_size=self.tokenizer.get_vocab_size(),
            )
            for name, prompt in SAMPLE_PROMPTS.items()
        }
