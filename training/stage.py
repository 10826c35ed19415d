"""The contract between the training engine and a stage (pre-training, SFT, DPO).

The engine (training/trainer.py) owns everything a stage has in common: model building,
precision, compile, DDP, the optimizer and schedule, gradient accumulation, validation,
TensorBoard, checkpoints, exact resume and signals. A stage supplies only its data and its loss,
by subclassing `Stage`. A training script then calls:

    result = train(config, build_stage)      # build_stage(context: RunContext) -> Stage

`build_stage` runs after the engine has loaded the tokenizer, resolved the model config and
picked the device and precision, so the stage can validate its data against them; everything
a stage may need of the run comes through its RunContext (it never asks torch.distributed or
works out the precision itself).

How the engine uses a stage, per optimizer step `step` (0-based):

1. For every micro-batch this rank runs, `batch = stage.train_micro_batch(step, micro_index)`.
   `micro_index` is the micro-batch's position among ALL micro-batches of the step, across all
   ranks: `rank * accumulation_steps + micro_step`, in `range(context.micro_batches_per_step)`.
   The batch must be a pure function of (config.seed, step, micro_index), e.g. a
   `numpy.random.default_rng([seed, step, micro_index])`: resume then needs no replay, and one
   GPU with 2x accumulation sees exactly the data of 2 GPUs.
   A batch is a dict of CPU tensors; the engine moves every tensor value to the device
   (non-tensor values are passed through untouched).
2. `stage.count(batch)` (an int, known before the forward pass: target tokens for language
   modelling, pairs for DPO) is summed over all micro-batches and ranks of the step into N.
3. `loss_sum, metrics = stage.loss(model, batch)` runs under the engine's autocast. `loss_sum`
   is a scalar SUM over the batch's count units (not a mean); the engine backpropagates
   `loss_sum / N` (times world size, because DDP averages gradients), so k micro-batches of b
   give exactly the gradient of one batch of k*b. `metrics` maps TensorBoard names (e.g.
   "rewards/chosen") to scalar tensors that are also SUMS over count units; the engine logs
   sum / N. `model` is the training module (maybe compiled and DDP-wrapped): call it as
   `model(idx) -> logits [B, T, padded_vocab]`.
4. `stage.tokens(batch)` (an int) counts tokens processed, for tokens/s and MFU.

At each evaluation (every config.eval_interval steps and at the end; training/evaluation.py):
- `stage.validation_batches()` is a FIXED list (same batches every time); rank r evaluates
  batches[r::world_size]; the means per count unit over all of them, {"loss": ..., metric:
  ...}, go through `stage.evaluation_scalars(means)` (where a stage derives val/ppl, val/bpb)
  and are logged as "val/<name>"; they come back in TrainResult.val_metrics.
- On rank 0 only, `stage.text_samples(model)` returns {name: text} logged as TensorBoard text
  "samples/<name>". `model` is the plain module (never compiled/DDP), in eval mode, under
  torch.no_grad and autocast; random sampling inside it cannot disturb training (the engine
  forks the RNG).

Class attribute every concrete stage must set: `name` ("pre_training" | "sft" | "dpo"), the
kind of tokenized data it reads and the "stage" of each checkpoint's config.json.

A stage that sets `self.epochs` (a training.epochs.EpochCounter) gets train/epoch logged with
the train scalars (`epoch_scalars`); every stage prints its epoch report at the start.

`state_dict()` / `load_state_dict()` save and restore whatever state a stage keeps (none for a
pure-function loader); it is stored in training_state.pt, so keep it to tensors, numbers,
strings, lists and dicts (loaded with torch.load(weights_only=True)).
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from model.config import ModelConfig
from training.distributed import Distributed, barrier
from training.epochs import EpochCounter
from training.precision import autocast

Batch = dict[str, torch.Tensor]


@dataclass
class RunContext:
    """What the engine knows when it builds the stage."""

    config: object  # the run config (a training.config.TrainConfig or a subclass)
    model_config: ModelConfig  # vocab_size comes from the tokenizer
    tokenizer: Tokenizer  # loaded with tokenizer.encoding.load_tokenizer
    tokenizer_path: Path
    tokenizer_sha256: str
    dist: Distributed  # rank, world size and device of this process
    precision: str  # "bf16" | "fp16" | "fp32", resolved for the device
    accumulation_steps: int  # micro-batches per rank per optimizer step
    micro_batches_per_step: int  # accumulation_steps * world_size
    max_steps: int  # optimizer steps of the whole run

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batches_per_step * self.config.micro_batch_size * self.config.block_size

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def autocast(self):
        """The run's autocast context (a no-op in fp32), for forward passes a stage runs."""
        return autocast(self.precision, self.device)

    def barrier(self) -> None:
        """Wait for every rank (e.g. for files rank 0 writes); a no-op in one process."""
        barrier(self.dist)


class Stage(abc.ABC):
    """One training stage's data and loss. See the module docstring for the contract."""

    name: str  # "pre_training" | "sft" | "dpo": written to config.json "stage"
    # Forward-only passes of a same-sized model per trained token (DPO's live reference); MFU
    # counts each as a third of a training pass (2N of 6N FLOPs per token).
    extra_forward_passes: int = 0
    epochs: EpochCounter | None = None  # how many times the run reads its corpora

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and not isinstance(getattr(cls, "name", None), str):
            raise TypeError(f"stage {cls.__name__} must set the class attribute name")

    @abc.abstractmethod
    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        """The training micro-batch number `micro_index` of optimizer step `step` (CPU tensors)."""

    @abc.abstractmethod
    def validation_batches(self) -> list[Batch]:
        """The fixed validation set, as micro-batches (CPU tensors)."""

    @abc.abstractmethod
    def count(self, batch: Batch) -> int:
        """Normalizer units in the batch (target tokens, or pairs), known before the forward."""

    @abc.abstractmethod
    def tokens(self, batch: Batch) -> int:
        """Tokens the model processes for this batch (for tokens/s and MFU)."""

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        """(scalar loss SUM over count units, {metric name: scalar SUM over count units})."""

    def evaluation_scalars(self, means: dict[str, float]) -> dict[str, float]:
        """What an evaluation logs as val/<name>, from the means per count unit of the loss
        ("loss") and of every metric over the validation set. By default: those means."""
        return means

    def text_samples(self, model: torch.nn.Module) -> dict[str, str]:
        """{name: generated text} for TensorBoard at each evaluation; none by default."""
        return {}

    def epoch_scalars(self, step: int) -> dict[str, float]:
        """train/epoch (and train/epoch/<corpus> for a mixture) after `step` steps."""
        return self.epochs.scalars(step) if self.epochs is not None else {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state
