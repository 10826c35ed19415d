"""The pre-training stage: next-token prediction on windows of the tokenized corpus
(training/pretraining_data.py); the loss is training/language_model_stage.py's."""

from __future__ import annotations

from model.generate import generate_text
from training.data_checks import open_training_data
from training.language_model_stage import LanguageModelStage
from training.pretraining_data import WindowSampler
from training.stage import Batch, RunContext

# Continued at each evaluation and logged as TensorBoard text (fits TinyStories and WikiText).
SAMPLE_PROMPTS = {
    "story": "Once upon a time",
    "article": "The history of the city",
}


class PretrainingStage(LanguageModelStage):
    name = "pre_training"
    tokenizer_profile = "pre_training"

    def __init__(self, context: RunContext):
        super().__init__(context)
        config = context.config
        vocab_size = context.model_config.vocab_size
        splits = open_training_data(
            config.data_dir, "pre_training", context.tokenizer_sha256, vocab_size
        )
        self.train_windows = WindowSampler(splits["train"], config.block_size, vocab_size)
        self.validation_windows = WindowSampler(splits["validation"], config.block_size, vocab_size)
        self.batch_size = config.micro_batch_size
        self.eval_batches = config.eval_batches
        self.seed = config.seed
        self.tokenizer = context.tokenizer
        self.sample_max_new_tokens = config.sample_max_new_tokens

    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        starts = self.train_windows.random_starts(self.batch_size, self.seed, step, micro_index)
        return self.train_windows.windows(starts)

    def validation_batches(self) -> list[Batch]:
        starts = self.validation_windows.evenly_spaced_starts(self.eval_batches * self.batch_size)
        return [
            self.with_target_bytes(self.validation_windows.windows(starts[i : i + self.batch_size]))
            for i in range(0, len(starts), self.batch_size)
        ]

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
