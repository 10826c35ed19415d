"""Tiny, hermetic inputs for the training-engine tests: a BPE tokenizer trained in-test and
pre-training shards written with tokenizer/tokenized_data.SplitWriter (no other CLI needed)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from tiny_tokenizer import train_tiny_tokenizer

import pre_training
from common.atomic import sha256_file
from tokenizer.encoding import load_tokenizer
from tokenizer.tokenized_data import SplitWriter
from training.config import TrainConfig
from training.pretraining_stage import PretrainingStage
from training.stage import IGNORE_INDEX, Batch, LanguageModelStage, RunContext

NAMES = ["Max", "Lily", "Tom", "Mia", "Ben", "Sue"]
PLACES = ["forest", "park", "garden", "river", "house", "school"]
THINGS = ["ball", "cat", "kite", "book", "cake", "tree"]


def make_text(rng: random.Random) -> str:
    """A patterned little story: easy for a tiny model to learn, so its loss falls fast."""
    name, place, thing = rng.choice(NAMES), rng.choice(PLACES), rng.choice(THINGS)
    return (
        f"{name} went to the {place}. {name} saw a {thing}. The {thing} was big. {name} was happy."
    )


def make_tokenizer(path: Path, vocab_size: int = 300) -> Path:
    rng = random.Random(0)
    return train_tiny_tokenizer(path, [make_text(rng) for _ in range(200)], vocab_size)


def make_pretraining_data(
    out_dir: Path,
    tokenizer_path: Path,
    documents: dict[str, int] | None = None,
    stage: str = "pre_training",
    vocab_size: int | None = None,
    sha256: str | None = None,
) -> Path:
    """OUT/{train,validation}/ in the tokenized format; `vocab_size`/`sha256` may lie on purpose."""
    tokenizer = load_tokenizer(tokenizer_path)
    documents = documents or {"train": 400, "validation": 40}
    for split_index, (split, count) in enumerate(documents.items()):
        rng = random.Random(100 + split_index)
        writer = SplitWriter(out_dir / split, stage, vocab_size or tokenizer.get_vocab_size())
        docs = [tokenizer.document(make_text(rng)) for _ in range(count)]
        if stage == "sft":
            writer.add_documents(docs, [[1] * len(d) for d in docs])
        elif stage == "dpo":
            writer.add_pairs([(d[:4], d[4:8] + [5], d[8:12] + [5]) for d in docs])
        else:
            writer.add_documents(docs)
        writer.finish(sha256 or sha256_file(tokenizer_path))
    return out_dir


def make_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """(tokenizer path, tokenized data folder) under tmp_path."""
    tokenizer_path = make_tokenizer(tmp_path / "tokenizer.json")
    return tokenizer_path, make_pretraining_data(tmp_path / "tokenized", tokenizer_path)


def tiny_config(tmp_path: Path, tokenizer_path: Path, data_dir: Path, **overrides) -> TrainConfig:
    """A debug-preset run on CPU that takes well under a second per few steps."""
    base = dataclasses.replace(
        pre_training.CONFIG,
        run_name="run",
        checkpoint_dir=str(tmp_path / "checkpoints"),
        data_dir=str(data_dir),
        tokenizer_path=str(tokenizer_path),
        model_preset="debug",
        block_size=32,
        micro_batch_size=4,
        tokens_per_step=0,
        max_steps=8,
        optimizer="adamw",  # the engine's tests; tests/test_training_muon.py passes Muon's
        schedule="cosine",
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_interval=4,
        eval_batches=2,
        log_interval=1,
        checkpoint_interval=4,
        keep_last=2,
        sample_max_new_tokens=8,
        precision="fp32",
        device="cpu",
        seed=7,
        compile=False,
        eval_tasks="",  # no benchmark scores (tests/test_evaluation_training.py turns them on)
    )
    return dataclasses.replace(base, **overrides)


class FixedPoolStage(LanguageModelStage):
    """Language modelling on a fixed pool of rows, some targets masked with -100.

    Step s uses rows perm_s[:rows_per_step] (perm_s seeded by (seed, s)); micro-batch i of the
    step takes the i-th slice of micro_batch_size rows. So 1 x 8 rows and 2 x 4 rows read the
    same rows per step: what the accumulation-equivalence tests need.
    """

    name = "fixed_pool"

    def __init__(self, context: RunContext, pool_size: int = 16, mask_fraction: float = 0.3):
        super().__init__(context)
        config = context.config
        generator = torch.Generator().manual_seed(config.seed)
        vocab = context.model_config.vocab_size
        rows = torch.randint(0, vocab, (pool_size, config.block_size + 1), generator=generator)
        self.inputs = rows[:, :-1]
        self.targets = rows[:, 1:].clone()
        masked = torch.rand(self.targets.shape, generator=generator) < mask_fraction
        self.targets[masked] = IGNORE_INDEX
        self.batch_size = config.micro_batch_size
        self.rows_per_step = context.micro_batches_per_step * config.micro_batch_size
        self.seed = config.seed

    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        order = np.random.default_rng([self.seed, step]).permutation(len(self.inputs))
        rows = torch.from_numpy(order[: self.rows_per_step])
        rows = rows[micro_index * self.batch_size : (micro_index + 1) * self.batch_size]
        return {"inputs": self.inputs[rows], "targets": self.targets[rows]}

    def validation_batches(self) -> list[Batch]:
        return [self.validation_batch({"inputs": self.inputs[:4], "targets": self.targets[:4]}, 0)]

    def loss(self, model, batch: Batch):
        loss_sum, metrics = super().loss(model, batch)
        first_targets = (batch["targets"][:, 0] != IGNORE_INDEX).sum().float()
        return loss_sum, {**metrics, "debug/first_target_sum": first_targets}


def signal_at(step_to_signal: int, signum: int):
    """A pre-training stage that sends `signum` to this process while building step k's data."""

    class SignalAt(PretrainingStage):
        def train_micro_batch(self, step, micro_index):
            if step == step_to_signal and micro_index == 0:
                os.kill(os.getpid(), signum)
            return super().train_micro_batch(step, micro_index)

    return SignalAt


REPO = Path(__file__).resolve().parents[1]


def torchrun(script: str, config, processes: int = 2) -> subprocess.CompletedProcess:
    """Run a training script under torchrun (gloo on CPU) with `config` as --key=value flags."""
    argv = [
        f"--{key}={json.dumps(value) if isinstance(value, dict) else value}"
        for key, value in config.to_dict().items()
        if value is not None
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            script,
            *argv,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def overfit_one_batch(tmp_path: Path, inputs, **overrides) -> list[float]:
    """The training losses of 60 steps on one fixed batch of 4 x 32 tokens (no masking)."""
    import functools

    from training.trainer import train

    config = tiny_config(
        tmp_path,
        *inputs,
        max_steps=60,
        warmup_steps=5,
        eval_interval=1000,
        checkpoint_interval=1000,
        **overrides,
    )
    stage = functools.partial(FixedPoolStage, pool_size=4, mask_fraction=0.0)
    return train(config, stage).losses


def logged_scalars(run_dir: Path, tag: str = "train/loss") -> list[float]:
    """Every value a run logged to TensorBoard under `tag`, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]
