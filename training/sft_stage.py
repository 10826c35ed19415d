"""The SFT stage: packed conversations in, cross-entropy on assistant tokens only.

The engine (training/trainer.py) does everything else: init from a pre-trained checkpoint,
precision, accumulation, validation, TensorBoard, checkpoints, exact resume, DDP. See
training/sft_data.py for how conversations become rows (packing, and why). A weighted mixture
of corpora (--data_dir=a:0.7,b:0.3) interleaves their packed rows by weight, each corpus read
in its own epochs (training/data_mixture.py); the text samples come from the first corpus.

Per micro-batch: inputs and targets [micro_batch_size, block_size]; targets are -100 outside
assistant content and its `<|end|>`, so `loss_sum` sums the negative log-likelihood of the
assistant tokens alone and `count` is how many there are (the engine divides by the step total;
training/language_model_stage.py). val/bpb is in bits per byte of the assistant replies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.errors import UserError
from model.generate import generate
from tokenizer.tokenized_data import TokenizedSplit
from training.config import TrainConfig, option
from training.data_mixture import Interleave, open_corpora
from training.epochs import EpochCounter
from training.language_model_stage import LanguageModelStage
from training.sft_data import PackedSFTData, rows_to_batch
from training.stage import Batch, RunContext


@dataclass(kw_only=True)
class SFTConfig(TrainConfig):
    """TrainConfig plus what SFT adds (the values are in post_training_sft.py's CONFIG)."""

    eval_split: str = option("held-out split for validation loss and text samples")
    num_text_samples: int = option("held-out prompts answered in TensorBoard at each eval")

    def check(self) -> None:
        super().check()
        if self.num_text_samples < 0:
            raise UserError(f"--num_text_samples={self.num_text_samples} must be >= 0")


def first_assistant_prompt(split: TokenizedSplit, index: int) -> list[int]:
    """Conversation `index` up to and including its first `<|assistant|>` (a generation prompt)."""
    ids = np.asarray(split.document(index), np.int64)
    mask = np.asarray(split.loss_mask[int(split.doc_offsets[index]) :][: len(ids)])
    trained = np.flatnonzero(mask)
    return ids[: int(trained[0])].tolist() if len(trained) else ids.tolist()


class SFTStage(LanguageModelStage):
    name = "sft"

    def __init__(self, context: RunContext):
        super().__init__(context)
        config = context.config
        self.micro_batch_size = config.micro_batch_size
        corpora = open_corpora(
            config.data_dir,
            self.name,
            context.tokenizer_sha256,
            context.model_config.vocab_size,
            splits=("train", config.eval_split),
        )
        for corpus in corpora:
            for split in corpus.splits.values():
                split.check_token_ids(context.model_config.vocab_size)
        self.train_data = [
            PackedSFTData(corpus.splits["train"], config.block_size, config.seed)
            for corpus in corpora
        ]
        self.eval_data = [
            PackedSFTData(corpus.splits[config.eval_split], config.block_size, config.seed,
                          shuffle=False)
            for corpus in corpora
        ]  # fmt: skip
        self.eval_split = corpora[0].splits[config.eval_split]
        weights = [corpus.spec.weight for corpus in corpora]
        self.mixture = Interleave(weights) if len(corpora) > 1 else None
        if self.mixture is not None:
            self.corpus_tags = tuple(corpus.name for corpus in corpora)
        self.epochs = EpochCounter(
            names=[corpus.spec.path for corpus in corpora],
            weights=weights,
            sizes=[data.rows_in_epoch(0) for data in self.train_data],
            units_per_step=context.micro_batches_per_step * config.micro_batch_size,
            unit="packed rows",
            tags=[corpus.name for corpus in corpora],
        )
        if context.is_main:
            for corpus, train, held_out in zip(corpora, self.train_data, self.eval_data):
                where = f" {corpus.spec.path}" if self.mixture is not None else ""
                print(
                    f"sft data{where}: train {train.stats}, "
                    f"{train.rows_in_epoch(0)} packed rows per epoch ({train.fill_fraction():.0%} "
                    f"tokens, the rest padding); {config.eval_split} {held_out.stats}"
                )
            print("\n".join(self.epochs.report(context.max_steps)))

    # -- batches -------------------------------------------------------------------------
    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        micro_batch = step * self.context.micro_batches_per_step + micro_index
        first = micro_batch * self.micro_batch_size
        if self.mixture is None:
            inputs, targets = self.train_data[0].batch(first, self.micro_batch_size)
        else:
            slots = np.arange(first, first + self.micro_batch_size)
            rows = zip(self.mixture.corpus(slots).tolist(), self.mixture.rank(slots).tolist())
            inputs, targets = rows_to_batch([self.train_data[c].row(r) for c, r in rows])
        return {"inputs": inputs, "targets": targets}

    def validation_batches(self) -> list[Batch]:
        """Up to eval_batches micro-batches per corpus, tagged with its corpus in a mixture."""
        batches = []
        for index, data in enumerate(self.eval_data):
            rows = data.rows_in_epoch(0)
            for number, first in enumerate(range(0, rows, self.micro_batch_size)):
                if number == self.context.config.eval_batches:
                    break
                inputs, targets = data.batch(first, min(self.micro_batch_size, rows - first))
                batch = self.with_target_bytes({"inputs": inputs, "targets": targets})
                if self.mixture is not None:
                    batch["corpus"] = torch.full((len(inputs),), index)  # [B]
                batches.append(batch)
        return batches

    # -- text samples --------------------------------------------------------------------
    def text_samples(self, model: torch.nn.Module) -> dict[str, str]:
        config = self.context.config
        count = min(config.num_text_samples, self.eval_split.meta["num_documents"])
        keep = max(1, config.block_size - config.sample_max_new_tokens)  # room for the answer
        prompts = [first_assistant_prompt(self.eval_split, i)[-keep:] for i in range(count)]
        return answer_samples(model, self.context.tokenizer, prompts, config.sample_max_new_tokens)


def answer_samples(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> dict:
    """{"answer_k": markdown} with the model's greedy answer to each prompt (none if 0 tokens)."""
    samples = {}
    for index, prompt in enumerate(prompts if max_new_tokens else []):
        answer = generate(
            model,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            vocab_size=tokenizer.get_vocab_size(),
        )
        samples[f"answer_{index}"] = render_sample(tokenizer, prompt, list(answer))
    return samples


def render_sample(tokenizer, prompt: list[int], answer: list[int]) -> str:
    """Markdown for TensorBoard's text plugin: the prompt with its role tokens, then the answer."""
    prompt_text = tokenizer.decode(prompt, skip_special_tokens=False)
    return f"**prompt:** `{prompt_text}`\n\n**answer:** {tokenizer.decode(answer)}"
