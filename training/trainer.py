"""The training loop all three stages share: `train(config, build_stage) -> TrainResult`.

    from training.config import TrainConfig, parse_config
    from training.trainer import train
    result = train(parse_config(CONFIG, sys.argv[1:]), MyStage)   # MyStage(context) -> Stage

One optimizer step (see training/stage.py for the stage's side of the contract):

    lr = schedule(step)
    batches = this rank's micro-batches of the step        (pure function of seed, step, index)
    N = total count(batch) over all micro-batches and ranks  (one all-reduce)
    for each batch: backward(loss_sum(batch) * world / N)    (DDP no_sync until the last one)
    skip the step if the loss or gradient is not finite (stop after several in a row)
    clip the gradient norm, optimizer step (Muon + AdamW, or AdamW; through the fp16 GradScaler)

Every eval_interval steps: validation (training/evaluation.py) and text samples.
Every checkpoint_interval steps, at the end, and on SIGINT/SIGTERM: an atomic checkpoint
(training/checkpoint.py). `--resume` reloads weights, optimizer, scaler, RNG and loop state
(training/run_folder.py); the data of step k is a pure function of k, so steps k+1... are
exactly those of the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.errors import UserError
from common.locking import folder_lock
from training import checkpoint as ckpt
from training.config import config_to_text
from training.distributed import (
    Distributed,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    setup_distributed,
    teardown_distributed,
)
from training.evaluation import evaluate
from training.losses import compiled_losses
from training.mfu import peak_flops, training_flops_per_token
from training.optimizer import build_optimizer, set_hyperparameters
from training.precision import enable_fast_fp32_matmuls, grad_scaler
from training.result import StepStats, TrainResult
from training.run_folder import LoopState, prepare_run_folder, resume, save
from training.run_setup import build_model, run_context
from training.signals import StopRequest
from training.stage import Batch, RunContext, Stage
from training.task_scores import TaskScores
from training.tensorboard_log import TensorBoardLog, peak_memory_gb
from training.transfer import batch_to_device, host_to_device, to_host


def train(config, build_stage: Callable[[RunContext], Stage]) -> TrainResult:
    """Run (or resume) one training run; see the module docstring.

    Rank 0 holds an OS lock on the run folder from start to end (common/locking.py), so a
    second process started on the same run (the same --resume in two terminals) stops with a
    one-line error naming the first, before it touches anything.
    """
    config.check()
    distributed = setup_distributed(config.device)
    run_dir = Path(config.checkpoint_dir) / config.run_name
    try:
        lock = folder_lock(run_dir, what="training run") if distributed.is_main else None
        with lock or contextlib.nullcontext():
            trainer = Trainer(config, build_stage, distributed)
            try:
                return trainer.run()
            finally:
                trainer.log.close()
    finally:
        teardown_distributed()


def out_of_memory_message(config) -> str:
    return (
        f"out of GPU memory with micro_batch_size={config.micro_batch_size}, "
        f"block_size={config.block_size}, activation_checkpointing="
        f"{config.activation_checkpointing}: lower --micro_batch_size (gradient accumulation "
        "keeps tokens_per_step), pass --activation_checkpointing=true, or lower --block_size"
    )


class Trainer:
    """One run: set up in the order below (each step needs the ones before it), then `run()`."""

    def __init__(self, config, build_stage: Callable[[RunContext], Stage], dist: Distributed):
        if config.init_from and config.model_preset:  # the checkpoint gives the model
            config = dataclasses.replace(config, model_preset=None)  # say so, print and save
        self.config, self.dist, self.device = config, dist, dist.device
        if self.device.type == "cuda":
            enable_fast_fp32_matmuls()
        # 1. What the run is made of; the stage checks its data against it.
        self.context, init = run_context(config, dist)
        self.stage = build_stage(self.context)
        # 2. The run folder, once every input is valid (--overwrite deletes the old run).
        self.run_dir = Path(config.checkpoint_dir) / config.run_name
        prepare_run_folder(config, self.run_dir, dist)
        # 3. Model, optimizer and loop state: fresh, or the checkpoint's with --resume.
        self.model = build_model(init, config.seed, self.device)  # plain: saved and sampled
        self.model.gradient_checkpointing = config.activation_checkpointing
        self.optimizer = build_optimizer(self.model, config, self.device)
        self.scaler = grad_scaler(self.context.precision, self.device)
        self.loop, self.last_checkpoint = LoopState(), None
        if config.resume:
            self.last_checkpoint, self.loop = resume(self)
        # 4. The modules forward passes run through: `forward_model` (compiled with --compile)
        # for training and validation, wrapped in DDP as `train_model` for the backward pass.
        self.forward_model = torch.compile(self.model) if config.compile else self.model
        self.train_model = self.forward_model
        if dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # gradient_as_bucket_view: gradients live in DDP's all-reduce buckets (no 2nd copy)
            self.train_model = DistributedDataParallel(
                self.forward_model, device_ids=device_ids, gradient_as_bucket_view=True
            )
        # The stage's losses compile too (training/losses.py): no fp32 copy of [B, T, V] logits.
        self.compile_losses = config.compile and self.device.type == "cuda"
        # 5. What is measured and logged.
        self.validation = self.stage.validation_batches()
        self.max_steps = self.context.max_steps
        self.flops_per_token = training_flops_per_token(
            self.context.model_config, config.block_size
        ) * (1 + self.stage.extra_forward_passes / 3)
        self.peak_flops = peak_flops(self.device)
        # a resumed run drops what the old one logged after its checkpoint (steps > k)
        purge_step = self.loop.step + 1 if self.loop.step else None
        self.log = TensorBoardLog(self.run_dir / "tensorboard", dist.is_main, purge_step)
        self.task_scores = TaskScores(config, self.stage.name, self.context)  # eval_tasks

    # ----- the loop -----

    def run(self) -> TrainResult:
        config, loop = self.config, self.loop
        self._print_header()
        result = TrainResult(self.model, self.context.tokenizer, self.stage, self.run_dir,
                             loop.step, is_main=self.dist.is_main)  # fmt: skip
        progress = tqdm(
            total=self.max_steps, initial=loop.step, disable=not self.dist.is_main, unit="step",
            desc=config.run_name, dynamic_ncols=True, file=sys.stderr,
        )  # fmt: skip
        interval_tokens, interval_seconds = 0, 0.0
        with StopRequest(announce=self.dist.is_main) as stop, progress:
            while loop.step < self.max_steps:
                started = time.perf_counter()
                stats = self._guard_oom(self._train_step)
                interval_seconds += time.perf_counter() - started
                interval_tokens += stats.tokens
                loop.step += 1
                loop.tokens_seen += stats.tokens
                result.losses.append(stats.loss)
                tokens_per_s = interval_tokens / max(interval_seconds, 1e-9)
                progress.update(1)
                # refresh=False: the bar redraws at its own pace, not once per step
                progress.set_postfix(
                    loss=f"{stats.loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False
                )
                if loop.step % config.log_interval == 0 or loop.step == self.max_steps:
                    self._log_train(stats, tokens_per_s)
                    interval_tokens, interval_seconds = 0, 0.0
                if loop.step % config.eval_interval == 0 or loop.step == self.max_steps:
                    result.val_metrics = self._guard_oom(self._evaluate, progress)
                if self.task_scores.due(loop.step, self.max_steps):
                    result.task_scores = self.task_scores.run(
                        self.model, loop.step, self.log, progress
                    )
                stopping = self._stop_requested(stop)
                due = loop.step % config.checkpoint_interval == 0 or loop.step == self.max_steps
                if stopping or due:
                    self._save()
                if stopping:
                    # (a rank that only heard of the signal from another rank reports SIGTERM)
                    result.stopped_by_signal = stop.signal_number or signal.SIGTERM
                    self._print(f"stopped at step {loop.step}; checkpoint {self.last_checkpoint}."
                                " Continue with the same options plus --resume=true")  # fmt: skip
                    break
        self.log.flush()
        self.model.eval()
        return dataclasses.replace(
            result, step=loop.step, val_loss=loop.last_val_loss,
            last_checkpoint=self.last_checkpoint, skipped_steps=loop.skipped_steps,
        )  # fmt: skip

    def _guard_oom(self, function, *args):
        try:
            return function(*args)
        except torch.cuda.OutOfMemoryError:
            raise UserError(out_of_memory_message(self.config)) from None

    def _train_step(self) -> StepStats:
        """One optimizer step. The only host sync is `to_host` at the end (the skip decision
        needs the loss): nothing in the micro-batch loop waits for the GPU."""
        lr = set_hyperparameters(self.optimizer, self.config, self.loop.step, self.max_steps)
        first = self.dist.rank * self.context.accumulation_steps
        batches = [
            self.stage.train_micro_batch(self.loop.step, first + m)
            for m in range(self.context.accumulation_steps)
        ]
        totals = {
            "count": float(sum(self.stage.count(b) for b in batches)),
            "tokens": float(sum(self.stage.tokens(b) for b in batches)),
        }
        if self.dist.enabled:
            # N counts every rank's micro-batches. It stays on the device (the backward pass
            # can use it as it is), so this all-reduce costs no host sync.
            summed = all_reduce_sum(
                host_to_device(torch.tensor(list(totals.values()), dtype=torch.float64),
                               self.device), self.dist,
            )  # fmt: skip
            totals = dict(zip(totals, summed))
            # DDP averages gradients over ranks; * world_size turns that into a sum over ranks.
            scale = (self.dist.world_size / totals["count"].clamp(min=1.0)).float()
        else:
            scale = 1.0 / max(totals["count"], 1.0)
        sums = self._forward_backward(batches, scale)
        names = sorted(sums)
        reduced = all_reduce_sum(torch.stack([sums[n] for n in names]), self.dist)
        self.scaler.unscale_(self.optimizer)  # no-op unless fp16
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        values = to_host({**dict(zip(names, reduced)), "grad_norm": grad_norm, **totals})
        count = max(values.pop("count"), 1.0)
        stats = StepStats(
            loss=values.pop("loss") / count, grad_norm=values.pop("grad_norm"),
            tokens=int(values.pop("tokens")), lr=lr,
            metrics={name: value / count for name, value in values.items()},
        )  # fmt: skip
        self._apply_step(stats)
        return stats

    def _forward_backward(self, batches: list[Batch], scale) -> dict[str, torch.Tensor]:
        """Backpropagate loss_sum * scale of every micro-batch; the summed loss and metrics."""
        sums: dict[str, torch.Tensor] = {"loss": torch.zeros((), device=self.device)}
        for micro_step, batch in enumerate(batches):
            last = micro_step == len(batches) - 1
            no_sync = self.train_model.no_sync if self.dist.enabled and not last else None
            with no_sync() if no_sync else contextlib.nullcontext():
                with self.context.autocast(), compiled_losses(self.compile_losses):
                    loss_sum, metrics = self.stage.loss(
                        self.train_model, batch_to_device(batch, self.device)
                    )
                self.scaler.scale(loss_sum * scale).backward()
            for name, value in {"loss": loss_sum, **metrics}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
        return sums

    def _apply_step(self, stats: StepStats) -> None:
        """The optimizer step, or a skipped step when the loss or gradient is not finite."""
        loop = self.loop
        if self.context.precision == "fp16":
            # GradScaler skips inf/nan gradients itself (that is how it finds its scale).
            finite = math.isfinite(stats.loss)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            finite = math.isfinite(stats.loss) and math.isfinite(stats.grad_norm)
            if finite:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            loop.nonfinite_streak = 0
            return
        loop.skipped_steps += 1
        loop.nonfinite_streak += 1
        self._print(
            f"warning: step {loop.step + 1}: non-finite loss {stats.loss} / grad norm "
            f"{stats.grad_norm}; step skipped ({loop.skipped_steps} so far)"
        )
        if loop.nonfinite_streak >= self.config.max_nonfinite_steps:
            raise UserError(
                f"the loss or gradient was not finite for {loop.nonfinite_streak} steps in "
                f"a row (up to step {loop.step + 1}); lower --learning_rate, use "
                "--precision=bf16 or fp32, or check the data; the last good checkpoint is "
                f"{self.last_checkpoint or 'none'}"
            )

    def _evaluate(self, progress) -> dict[str, float]:
        """Validation scalars (logged as val/<name>) and, on rank 0, text samples."""
        with compiled_losses(self.compile_losses):
            scalars = evaluate(self.stage, self.forward_model, self.validation, self.context)
        self.loop.last_val_loss, self.loop.last_val_step = scalars["loss"], self.loop.step
        self.log.scalars({f"val/{name}": value for name, value in scalars.items()}, self.loop.step)
        if self.dist.is_main:
            samples = self._text_samples()
            self.log.texts(samples, self.loop.step)
            summary = " | ".join(f"val/{name} {value:.4f}" for name, value in scalars.items())
            progress.write(f"step {self.loop.step}: {summary}")
            for name, text in samples.items():
                progress.write(f"  [{name}] {text!r}")
        return scalars

    def _text_samples(self) -> dict[str, str]:
        # Sampling must not move the training RNG, or a resumed run would diverge.
        devices = [self.device] if self.device.type == "cuda" else []
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=devices), self.context.autocast():
                return self.stage.text_samples(self.model)
        finally:
            self.model.train()

    def _stop_requested(self, stop: StopRequest) -> bool:
        """True on every rank as soon as any rank got a signal (they must stop together)."""
        if not self.dist.enabled:
            return stop.requested
        flag = torch.tensor(1.0 if stop.requested else 0.0, device=self.device)
        return bool(all_reduce_max(flag, self.dist).item() > 0)

    def _log_train(self, stats: StepStats, tokens_per_s: float) -> None:
        scalars = {
            "train/loss": stats.loss,
            "train/lr": stats.lr,
            "train/grad_norm": stats.grad_norm,
            "perf/tokens_per_s": tokens_per_s,
            "perf/peak_memory_gb": peak_memory_gb(self.device),
        }
        if self.peak_flops:
            per_device = tokens_per_s / self.dist.world_size
            scalars["perf/mfu"] = per_device * self.flops_per_token / self.peak_flops
        scalars |= self.stage.epoch_scalars(self.loop.step)  # train/epoch
        self.log.scalars(scalars | stats.metrics, self.loop.step)

    # ----- checkpoints -----

    def _save(self) -> None:
        if self.dist.is_main:
            self.last_checkpoint = save(self)
        else:
            self.last_checkpoint = self.run_dir / ckpt.step_dir_name(self.loop.step)
        barrier(self.dist)

    # ----- output -----

    def _print(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text, file=sys.stderr)

    def _print_header(self) -> None:
        if not self.dist.is_main:
            return
        config, context = self.config, self.context
        print(f"config ({type(config).__name__}):\n{config_to_text(config)}")
        print(
            f"model: {self.model.num_parameters() / 1e6:.2f}M parameters "
            f"({self.model.num_parameters(non_embedding=True) / 1e6:.2f}M non-embedding), "
            f"{context.model_config.to_dict()}"
        )
        print(
            f"device {self.device}, precision {context.precision}, {self.dist.world_size} "
            f"process(es), {context.accumulation_steps} micro-batch(es) of "
            f"{config.micro_batch_size} x {config.block_size} per process per step = "
            f"{self.context.tokens_per_step:,} tokens/step, {self.max_steps} steps; run folder "
            f"{self.run_dir}",
            flush=True,
        )
