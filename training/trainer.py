"""The training loop all three stages share (each supplies a training/stage.py Stage):

    result = train(parse_config(CONFIG, sys.argv[1:]), PretrainingStage)

Each step accumulates micro-batches, skips a non-finite step, clips and steps; validation, text
samples, benchmark scores and checkpoints come at their intervals; a SIGINT/SIGTERM saves and
stops, and --resume continues bitwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.atomic import sha256_file
from common.errors import UserError
from common.locking import folder_lock
from model.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint
from model.config import ModelConfig, from_preset
from model.plan import flops_per_token
from model.transformer import Transformer
from tokenizer.encoding import ChatTokenizer, load_tokenizer
from training import checkpoint
from training.device import (
    Distributed,
    all_reduce,
    barrier,
    batch_to_device,
    enable_fast_fp32_matmuls,
    grad_scaler,
    host_to_device,
    peak_flops,
    peak_memory_gb,
    resolve_precision,
    setup_distributed,
    to_host,
)
from training.optimizer import build_optimizer, set_hyperparameters
from training.stage import Batch, RunContext, Stage
from training.task_scores import TaskScores, summary


def train(config, build_stage: Callable[[RunContext], Stage]) -> TrainResult:
    """Run (or resume) one training run; see the module docstring."""
    config.check()
    dist = setup_distributed(config.device)
    run_dir = Path(config.checkpoint_dir) / config.run_name
    try:
        # one process per run folder: a second one stops with a one-line error
        lock = folder_lock(run_dir, "training run") if dist.is_main else contextlib.nullcontext()
        with lock:
            trainer = Trainer(config, build_stage, dist)
            try:
                return trainer.run()
            except torch.cuda.OutOfMemoryError:
                raise UserError(
                    f"out of GPU memory at --micro_batch_size={config.micro_batch_size} "
                    f"--block_size={config.block_size}: lower either (accumulation keeps "
                    "tokens_per_step) or pass --activation_checkpointing=true"
                ) from None
            finally:
                trainer.log.close()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@dataclass
class TrainResult:
    model: Transformer  # the plain module, eval mode, on the training device
    tokenizer: ChatTokenizer
    stage: Stage
    run_dir: Path
    step: int  # optimizer steps completed, in total
    losses: list[float] = field(default_factory=list)  # of each step this call ran
    val_loss: float | None = None
    val_metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation's
    task_scores: dict[str, float] = field(default_factory=dict)  # the last eval/<task>/<metric>
    last_checkpoint: Path | None = None
    stopped_by_signal: int | None = None
    skipped_steps: int = 0
    is_main: bool = True  # rank 0, the process that logs, saves and prints

    @property
    def val_summary(self) -> str:
        """For a closing report: val loss 2.0213, 0.6712 bits per byte (language models)."""
        if self.val_loss is None:
            return "val loss n/a"
        bpb = self.val_metrics.get("bpb")
        return f"val loss {self.val_loss:.4f}" + (f", {bpb:.4f} bits per byte" if bpb else "")

    @property
    def task_summary(self) -> str:
        return summary(self.task_scores)

    @property
    def should_report(self) -> bool:
        """Whether a script prints its closing report: the run ended normally, on rank 0."""
        return not self.stopped_by_signal and self.is_main

    @property
    def exit_code(self) -> int:
        """128 + the signal's number when a signal stopped the run (as shells report it)."""
        return 128 + self.stopped_by_signal if self.stopped_by_signal else 0


@dataclass
class LoopState:
    """The loop's own state: saved in every checkpoint, restored by --resume."""

    step: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0  # for a non-finite loss or gradient
    nonfinite_streak: int = 0
    last_val_loss: float | None = None
    last_val_step: int | None = None  # the step last_val_loss was measured at


@contextlib.contextmanager
def signals_caught(announce: bool):
    """Yields a list that the first SIGINT or SIGTERM appends its number to (the loop saves and
    stops after the step); a second one raises KeyboardInterrupt (the last checkpoint stays)."""
    received = []

    def handle(signum, frame) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        if announce:
            message = f"\n{signal.Signals(signum).name}: saving a checkpoint after this step"
            print(message + " (send it again to abort without saving)", file=sys.stderr, flush=True)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # handlers can be set only there
        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class TensorBoardLog:
    """A SummaryWriter on rank 0, no-ops elsewhere. Names: train/{loss,lr,grad_norm,epoch},
    perf/{tokens_per_s,mfu,peak_memory_gb}, val/<name>, the stage's metrics,
    eval/<task>/<metric>, samples/<name> (text). A resumed run purges what followed its step."""

    def __init__(self, log_dir: Path, enabled: bool, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step) if enabled else None

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items() if self.writer else ():
            self.writer.add_scalar(name, value, step)

    def texts(self, values: dict[str, str], step: int) -> None:
        for name, text in values.items() if self.writer else ():  # 4 spaces: shown verbatim
            self.writer.add_text(f"samples/{name}", "    " + text.replace("\n", "\n    "), step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def resolve_model(config, tokenizer: ChatTokenizer, tokenizer_sha256: str):
    """(ModelConfig, the --init_from step folder or None): a preset sized by the tokenizer, or
    --init_from's model (the run's own newest checkpoint's, when resuming such a run)."""
    if config.init_from and config.resume:
        for step_dir in checkpoint.resume_candidates(Path(config.checkpoint_dir) / config.run_name):
            with contextlib.suppress(UserError, OSError, KeyError, TypeError, ValueError):
                return ModelConfig.from_dict(read_checkpoint_config(step_dir)["model"]), None
    vocab_size = tokenizer.get_vocab_size()
    if config.init_from:
        step_dir = resolve_checkpoint(config.init_from)
        saved = read_checkpoint_config(step_dir)
        model_config = ModelConfig.from_dict(saved["model"])
        saved_sha = (saved.get("tokenizer") or {}).get("sha256")
        if saved_sha not in (None, tokenizer_sha256) or model_config.vocab_size < vocab_size:
            raise UserError(
                f"--init_from={config.init_from} was trained with another tokenizer than "
                f"{config.tokenizer_path} (the model's vocabulary has {model_config.vocab_size} "
                f"tokens, the tokenizer {vocab_size}); use the model's own tokenizer"
            )
        if config.block_size > model_config.block_size:
            raise UserError(
                f"--block_size={config.block_size} exceeds the context of "
                f"--init_from's model ({model_config.block_size}); use "
                f"--block_size={model_config.block_size} or less"
            )
        if config.model_overrides:
            raise UserError("--model_overrides cannot change a model loaded with --init_from")
        return model_config, step_dir
    if not config.model_preset:
        raise UserError(
            "no model: set --model_preset (debug, 15m, 124m, 170m) or --init_from=<checkpoint>"
        )
    if {"vocab_size", "block_size"} & set(config.model_overrides):
        raise UserError(
            "--model_overrides may not set vocab_size (it comes from the tokenizer) "
            "or block_size (use --block_size)"
        )
    sizes = {"vocab_size": vocab_size, "block_size": config.block_size}
    return from_preset(config.model_preset, **{**config.model_overrides, **sizes}), None


def run_context(config, dist: Distributed) -> tuple[RunContext, Path | None]:
    """What a stage is built from (tokenizer, model shape, precision, batch geometry), and the
    --init_from step folder whose weights the model starts from (None: a fresh init)."""
    tokenizer_path = Path(config.tokenizer_path)
    tokenizer, tokenizer_sha256 = load_tokenizer(tokenizer_path), sha256_file(tokenizer_path)
    model_config, init_dir = resolve_model(config, tokenizer, tokenizer_sha256)
    micro_batches = config.micro_batches_per_step(dist.world_size)
    tokens_per_step = micro_batches * config.micro_batch_size * config.block_size
    max_steps = math.ceil(config.max_tokens / tokens_per_step) if config.max_tokens else None
    context = RunContext(
        config=config,
        model_config=model_config,
        tokenizer=tokenizer,
        tokenizer_path=tokenizer_path,
        tokenizer_sha256=tokenizer_sha256,
        dist=dist,
        precision=resolve_precision(config.precision, dist.device),
        accumulation_steps=micro_batches // dist.world_size,
        micro_batches_per_step=micro_batches,
        max_steps=max_steps or config.max_steps,
    )
    return context, init_dir


@torch.no_grad()
def validation_scalars(stage: Stage, model, batches: list[Batch], context: RunContext) -> dict:
    """The stage's evaluation scalars over `batches`: rank r runs batches r, r + world_size,
    ...; the sums and counts of all ranks are added in one all-reduce."""
    world, rank, device = context.dist.world_size, context.dist.rank, context.device
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0.0
    for index in range(rank, rank + world * math.ceil(len(batches) / world), world):
        # a rank left without a batch runs batch 0 at weight 0: the same forwards and names
        weight = 1.0 if index < len(batches) else 0.0
        batch = batches[index if weight else 0]
        count += weight * stage.count(batch)
        with context.autocast():
            loss_sum, metrics = stage.loss(model, batch_to_device(batch, device))
        for name, value in {"loss": loss_sum, **metrics}.items():
            sums[name] = sums.get(name, 0.0) + weight * value.detach().float()
    model.train()
    names = sorted(sums)
    stacked = torch.stack([torch.tensor(count, device=device), *map(sums.get, names)])
    totals = to_host(dict(zip(["count", *names], all_reduce(stacked, context.dist))))
    count = max(totals.pop("count"), 1.0)
    return stage.evaluation_scalars({name: value / count for name, value in totals.items()})


class Trainer:
    """One run: `__init__` sets it up (each part needs the ones before it), `run()` trains."""

    def __init__(self, config, build_stage: Callable[[RunContext], Stage], dist: Distributed):
        if config.init_from and config.model_preset:  # the checkpoint gives the model: say so
            config = dataclasses.replace(config, model_preset=None)
        self.config, self.dist, self.device = config, dist, dist.device
        if self.device.type == "cuda":
            enable_fast_fp32_matmuls()
        self.context, init_dir = run_context(config, dist)
        self.stage = build_stage(self.context)  # checks its data against the context
        self.run_dir = Path(config.checkpoint_dir) / config.run_name
        checkpoint.prepare_run_folder(config, self.run_dir, dist)  # once every input is valid
        if init_dir is not None:
            self.model = load_model(init_dir, device="cpu")[0]
        else:
            torch.manual_seed(config.seed)  # init on the CPU: the same weights on any device
            self.model = Transformer(self.context.model_config)
        self.model = self.model.to(self.device).train()  # plain: saved and sampled
        self.model.gradient_checkpointing = config.activation_checkpointing
        self.optimizer = build_optimizer(self.model, config, self.device)
        self.scaler = grad_scaler(self.context.precision, self.device)
        self.loop, self.last_checkpoint = LoopState(), None
        if config.resume:
            self.resume()
        # forward passes run through forward_model (compiled with --compile); the backward
        # pass through train_model, DDP-wrapped (gradients in its buckets, no second copy)
        self.forward_model = torch.compile(self.model) if config.compile else self.model
        self.train_model = self.forward_model
        if dist.enabled:
            self.train_model = DistributedDataParallel(
                self.forward_model,
                gradient_as_bucket_view=True,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.validation = self.stage.validation_batches()
        self.max_steps = self.context.max_steps
        flops = flops_per_token(self.context.model_config, config.block_size)["total"]
        # a forward-only pass (DPO's live reference) is a third of a training pass's FLOPs
        self.flops_per_token = flops * (1 + self.stage.extra_forward_passes / 3)
        self.peak_flops = peak_flops(self.device)
        purge_step = self.loop.step + 1 if self.loop.step else None
        self.log = TensorBoardLog(self.run_dir / "tensorboard", dist.is_main, purge_step)
        self.task_scores = TaskScores(config, self.stage.name, self.context)

    def run(self) -> TrainResult:
        config, loop, is_main = self.config, self.loop, self.dist.is_main
        self.print_header()
        result = TrainResult(self.model, self.context.tokenizer, self.stage, self.run_dir, 0)
        progress = tqdm(total=self.max_steps, initial=loop.step, disable=not is_main, unit="step")
        interval_tokens, interval_seconds = 0, 0.0
        with signals_caught(announce=is_main) as received, progress:
            while loop.step < self.max_steps:
                started = time.perf_counter()
                scalars, tokens = self.train_step()  # train/loss, train/lr, ... and tokens
                interval_seconds += time.perf_counter() - started
                interval_tokens += tokens
                loop.step, loop.tokens_seen = loop.step + 1, loop.tokens_seen + tokens
                result.losses.append(scalars["train/loss"])
                tokens_per_s = interval_tokens / max(interval_seconds, 1e-9)
                progress.update(1)
                progress.set_postfix(
                    loss=f"{result.losses[-1]:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False
                )
                last = loop.step == self.max_steps
                if loop.step % config.log_interval == 0 or last:
                    self.log_train(scalars, tokens_per_s)
                    interval_tokens, interval_seconds = 0, 0.0
                if loop.step % config.eval_interval == 0 or last:
                    result.val_metrics = self.validate(progress)
                if self.task_scores.due(loop.step, self.max_steps):
                    result.task_scores = self.task_scores.run(
                        self.model, loop.step, self.log, progress
                    )
                stopping = self.stop_requested(received)
                if stopping or loop.step % config.checkpoint_interval == 0 or last:
                    self.save()
                if stopping:  # (a rank that heard of it from another rank reports SIGTERM)
                    result.stopped_by_signal = received[0] if received else signal.SIGTERM
                    self.print(
                        f"stopped at step {loop.step}; checkpoint {self.last_checkpoint}."
                        " Continue with the same options plus --resume=true"
                    )
                    break
        self.model.eval()
        result.step, result.val_loss = loop.step, loop.last_val_loss
        result.last_checkpoint, result.skipped_steps = self.last_checkpoint, loop.skipped_steps
        result.is_main = is_main
        return result

    def train_step(self) -> tuple[dict[str, float], int]:
        """One optimizer step. Its only host sync is `to_host` at the end (skipping a step
        needs the loss): nothing in the micro-batch loop waits for the GPU."""
        step, accumulation = self.loop.step, self.context.accumulation_steps
        lr = set_hyperparameters(self.optimizer, self.config, step, self.max_steps)
        first = self.dist.rank * accumulation
        batches = [self.stage.train_micro_batch(step, first + m) for m in range(accumulation)]
        count = float(sum(map(self.stage.count, batches)))
        totals = {"count": count, "tokens": float(sum(map(self.stage.tokens, batches)))}
        if self.dist.enabled:  # summed on the device: no host sync
            local = torch.tensor(list(totals.values()), dtype=torch.float64)
            totals = dict(zip(totals, all_reduce(host_to_device(local, self.device), self.dist)))
            # DDP averages gradients over ranks; x world_size makes that a sum
            scale = (self.dist.world_size / totals["count"].clamp(min=1.0)).float()
        else:
            scale = 1.0 / max(totals["count"], 1.0)
        sums = self.forward_backward(batches, scale)
        reduced = all_reduce(torch.stack(list(sums.values())), self.dist)
        self.scaler.unscale_(self.optimizer)  # a no-op unless fp16
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        values = to_host({**dict(zip(sums, reduced)), "grad_norm": grad_norm, **totals})
        count, tokens = max(values.pop("count"), 1.0), int(values.pop("tokens"))
        loss, grad_norm = values.pop("loss") / count, values.pop("grad_norm")
        self.apply_step(loss, grad_norm)  # (grad_norm: before clipping)
        scalars = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm}
        return scalars | {name: value / count for name, value in values.items()}, tokens

    def forward_backward(self, batches: list[Batch], scale) -> dict[str, torch.Tensor]:
        """Backpropagate loss_sum * scale of every micro-batch; the summed loss and metrics."""
        sums: dict[str, torch.Tensor] = {"loss": torch.zeros((), device=self.device)}
        for index, batch in enumerate(batches):
            syncs = not self.dist.enabled or index == len(batches) - 1  # DDP: the last one only
            with contextlib.nullcontext() if syncs else self.train_model.no_sync():
                with self.context.autocast():
                    batch = batch_to_device(batch, self.device)
                    loss_sum, metrics = self.stage.loss(self.train_model, batch)
                self.scaler.scale(loss_sum * scale).backward()
            for name, value in {"loss": loss_sum, **metrics}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
        return dict(sorted(sums.items()))  # the same order on every rank

    def apply_step(self, loss: float, grad_norm: float) -> None:
        """The optimizer step, or a skipped one when the loss or gradient is not finite."""
        loop = self.loop
        if self.context.precision == "fp16":  # GradScaler skips inf/nan gradients itself
            finite = math.isfinite(loss)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            finite = math.isfinite(loss) and math.isfinite(grad_norm)
            if finite:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            loop.nonfinite_streak = 0
            return
        loop.skipped_steps += 1
        loop.nonfinite_streak += 1
        self.print(
            f"warning: step {loop.step + 1}: non-finite loss {loss} / grad norm "
            f"{grad_norm}; step skipped ({loop.skipped_steps} so far)"
        )
        if loop.nonfinite_streak >= self.config.max_nonfinite_steps:
            raise UserError(
                f"the loss or gradient was not finite for {loop.nonfinite_streak} steps in a row "
                f"up to step {loop.step + 1} (last checkpoint: {self.last_checkpoint}); lower "
                "--learning_rate, use --precision=bf16 or fp32, or check the data"
            )

    def validate(self, progress) -> dict[str, float]:
        """Validation scalars (logged as val/<name>) and, on rank 0, text samples."""
        scalars = validation_scalars(self.stage, self.forward_model, self.validation, self.context)
        self.loop.last_val_loss, self.loop.last_val_step = scalars["loss"], self.loop.step
        self.log.scalars({f"val/{name}": value for name, value in scalars.items()}, self.loop.step)
        if self.dist.is_main:
            # sampling must not move the training RNG, or a resumed run would diverge
            devices = [self.device] if self.device.type == "cuda" else []
            self.model.eval()
            with torch.random.fork_rng(devices=devices), self.context.autocast():
                samples = self.stage.text_samples(self.model)
            self.model.train()
            self.log.texts(samples, self.loop.step)
            summary = " | ".join(f"val/{name} {value:.4f}" for name, value in scalars.items())
            progress.write(f"step {self.loop.step}: {summary}")
            for name, text in samples.items():
                progress.write(f"  [{name}] {text!r}")
        return scalars

    def stop_requested(self, received: list) -> bool:
        """True on every rank as soon as any rank got a signal (they must stop together)."""
        if not self.dist.enabled:
            return bool(received)
        flag = torch.tensor(float(bool(received)), device=self.device)
        return bool(all_reduce(flag, self.dist, torch.distributed.ReduceOp.MAX).item() > 0)

    def log_train(self, scalars: dict[str, float], tokens_per_s: float) -> None:
        scalars = scalars | {
            "perf/tokens_per_s": tokens_per_s,
            "perf/peak_memory_gb": peak_memory_gb(self.device),
        }
        if self.peak_flops:
            per_device = tokens_per_s / self.dist.world_size
            scalars["perf/mfu"] = per_device * self.flops_per_token / self.peak_flops
        if self.stage.epochs is not None:  # train/epoch
            scalars |= self.stage.epochs.scalars(self.loop.step)
        self.log.scalars(scalars, self.loop.step)

    def resume(self) -> None:
        """The newest usable checkpoint's state, refused if the model, the data or the batch's
        shape changed."""
        context, is_main = self.context, self.dist.is_main
        fields = {f"model.{key}": value for key, value in context.model_config.to_dict().items()}
        fields |= {"stage": self.stage.name, "tokenizer.sha256": context.tokenizer_sha256}
        fields |= {
            f"train.{key}": getattr(self.config, key)
            for key in ("data_dir", "block_size", "micro_batch_size", "seed", "optimizer")
        }
        fields["run.micro_batches_per_step"] = context.micro_batches_per_step
        step_dir, _, state = checkpoint.load_checkpoint(self.run_dir, self.model, fields, is_main)
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # (empty when saved without fp16)
            self.scaler.load_state_dict(state["scaler"])
        checkpoint.restore_rng_state(state["rng"], self.device)
        self.stage.load_state_dict(state["stage"])
        self.loop, self.last_checkpoint = LoopState(**state["loop"]), step_dir
        if is_main:
            print(f"resuming from {step_dir} (step {self.loop.step})", file=sys.stderr)

    def save(self) -> None:
        """This step's checkpoint, written by rank 0 while the others wait."""
        loop, context = self.loop, self.context
        self.last_checkpoint = self.run_dir / checkpoint.step_dir_name(loop.step)
        if self.dist.is_main:
            config_json = {
                "train": self.config.to_dict(),
                "stage": self.stage.name,
                "step": loop.step,
                "tokenizer": {"sha256": context.tokenizer_sha256},
                # a val_loss only if measured on these weights: `best` is chosen by it
                "metrics": {
                    "val_loss": loop.last_val_loss if loop.last_val_step == loop.step else None,
                    "tokens_seen": loop.tokens_seen,
                },
                "run": {
                    "world_size": self.dist.world_size,
                    "max_steps": self.max_steps,
                    "accumulation_steps": context.accumulation_steps,
                    "micro_batches_per_step": context.micro_batches_per_step,
                    "precision": context.precision,
                },
            }
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": checkpoint.capture_rng_state(self.device),
                "loop": asdict(loop),
                "stage": self.stage.state_dict(),
            }
            step_dir, tokenizer_path = self.last_checkpoint, context.tokenizer_path
            checkpoint.save_checkpoint(step_dir, self.model, config_json, tokenizer_path, state)
            checkpoint.prune(self.run_dir, self.config.keep_last)
        barrier(self.dist)

    def print(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text, file=sys.stderr)

    def print_header(self) -> None:
        if not self.dist.is_main:
            return
        config, context, model = self.config, self.context, self.model
        width = max(map(len, config.to_dict()))
        print(f"config ({type(config).__name__}):")
        print("\n".join(f"  {key:<{width}} = {value!r}" for key, value in config.to_dict().items()))
        print(
            f"model: {model.num_parameters() / 1e6:.2f}M parameters "
            f"({model.num_parameters(non_embedding=True) / 1e6:.2f}M non-embedding), "
            f"{context.model_config.to_dict()}"
        )
        print(
            f"device {self.device}, precision {context.precision}, {self.dist.world_size} "
            f"process(es), {context.accumulation_steps} micro-batch(es) of "
            f"{config.micro_batch_size} x {config.block_size} per process per step = "
            f"{context.tokens_per_step:,} tokens/step, {self.max_steps} steps; run folder "
            f"{self.run_dir}",
            flush=True,
        )
