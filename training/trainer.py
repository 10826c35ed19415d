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

Every eval_interval steps: validation loss on the stage's fixed batches and text samples.
Every checkpoint_interval steps, at the end, and on SIGINT/SIGTERM: an atomic checkpoint.
`--resume` reloads weights, optimizer, scaler, RNG and loop state; the data of step k is a pure
function of k, so steps k+1... are exactly those of the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.atomic import sha256_file
from common.errors import UserError
from model.transformer import Transformer
from tokenizer.profiles import load_tokenizer
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
from training.losses import compiled_losses
from training.mfu import peak_flops, training_flops_per_token
from training.model_setup import build_model, resolve_init
from training.optimizer import build_optimizer, set_hyperparameters
from training.precision import autocast, enable_fast_fp32_matmuls, grad_scaler, resolve_precision
from training.signals import StopRequest
from training.stage import Batch, RunContext, Stage
from training.tensorboard_log import TensorBoardLog, peak_memory_gb


@dataclass
class TrainResult:
    model: Transformer  # the plain module, eval mode, on the training device
    tokenizer: Tokenizer
    run_dir: Path
    step: int  # optimizer steps completed, in total
    losses: list[float] = field(default_factory=list)  # train loss of each step run by this call
    val_loss: float | None = None  # the last evaluation's
    last_checkpoint: Path | None = None
    stopped_by_signal: int | None = None  # SIGINT/SIGTERM number when stopped early
    skipped_steps: int = 0
    is_main: bool = True  # rank 0 (the process that logs, saves and should print)


def early_exit_code(result: TrainResult) -> int | None:
    """The exit code a script returns before its closing demo, or None to go on.

    Non-zero ranks print nothing (0); a run stopped by SIGINT/SIGTERM says how to resume
    (128 + the signal number, as shells report it).
    """
    if not result.is_main:
        return 0
    if result.stopped_by_signal:
        print(
            f"stopped at step {result.step}; checkpoint {result.last_checkpoint}. "
            "Continue with the same options plus --resume=true",
            file=sys.stderr,
        )
        return 128 + result.stopped_by_signal
    return None


def train(config, build_stage: Callable[[RunContext], Stage]) -> TrainResult:
    """Run (or resume) one training run; see the module docstring."""
    config.check()
    distributed = setup_distributed(config.device)
    try:
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


def accumulation_steps(config, world_size: int) -> int:
    """Micro-batches per rank per step, so a step holds tokens_per_step tokens."""
    if config.tokens_per_step == 0:
        return 1
    per_round = config.micro_batch_size * config.block_size * world_size
    if config.tokens_per_step % per_round:
        nearest = max(per_round, round(config.tokens_per_step / per_round) * per_round)
        raise UserError(
            f"--tokens_per_step={config.tokens_per_step} is not a multiple of micro_batch_size"
            f" x block_size x processes = {config.micro_batch_size} x {config.block_size} x "
            f"{world_size} = {per_round}; use e.g. --tokens_per_step={nearest}"
        )
    return config.tokens_per_step // per_round


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to `device` without making the host wait for the GPU.

    On CUDA it goes through a contiguous page-locked (pinned) buffer: only from such memory is
    the copy asynchronous. (A strided source, such as the inputs slice of a [B, T+1] window
    array, would otherwise be made contiguous in pageable memory and copied synchronously.)
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    pinned.copy_(tensor)
    return pinned.to(device, non_blocking=True)


class Trainer:
    def __init__(self, config, build_stage: Callable[[RunContext], Stage], dist: Distributed):
        self.config = config
        self.dist = dist
        self.device = dist.device
        self.is_main = dist.is_main
        if self.device.type == "cuda":
            enable_fast_fp32_matmuls()
        self.precision = resolve_precision(config.precision, self.device)
        self.tokenizer_path = Path(config.tokenizer_path)
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.tokenizer_sha256 = sha256_file(self.tokenizer_path)
        self.run_dir = Path(config.checkpoint_dir) / config.run_name

        self.init_source = resolve_init(config, self.tokenizer, self.tokenizer_sha256)
        self.model_config = self.init_source.model_config
        self.accumulation = accumulation_steps(config, dist.world_size)
        self.micro_batches_per_step = self.accumulation * dist.world_size
        tokens_per_step = self.micro_batches_per_step * config.micro_batch_size * config.block_size
        self.max_steps = (
            math.ceil(config.max_tokens / tokens_per_step)
            if config.max_tokens
            else config.max_steps
        )
        self.context = RunContext(
            config=config,
            model_config=self.model_config,
            tokenizer=self.tokenizer,
            tokenizer_path=self.tokenizer_path,
            tokenizer_sha256=self.tokenizer_sha256,
            device=self.device,
            rank=dist.rank,
            world_size=dist.world_size,
            accumulation_steps=self.accumulation,
            micro_batches_per_step=self.micro_batches_per_step,
        )
        self.stage = build_stage(self.context)
        self._prepare_run_dir()  # after every input is validated: --overwrite deletes the old run
        self.model = build_model(self.init_source, config.seed, self.device)
        self.model.gradient_checkpointing = config.activation_checkpointing
        self.optimizer = build_optimizer(self.model, config, self.device)
        self.scaler = grad_scaler(self.precision, self.device)

        # Loop state (all of it is saved in training_state.pt).
        self.step = 0
        self.tokens_seen = 0
        self.skipped_steps = 0
        self.nonfinite_streak = 0
        self.last_val_loss: float | None = None
        self.last_val_step: int | None = None  # the step last_val_loss was measured at
        self.last_checkpoint: Path | None = None
        if config.resume:
            self._resume()

        self.eval_model = torch.compile(self.model) if config.compile else self.model
        self.train_model = self.eval_model
        if dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # gradient_as_bucket_view: gradients live in DDP's all-reduce buckets (no 2nd copy)
            self.train_model = DistributedDataParallel(
                self.eval_model, device_ids=device_ids, gradient_as_bucket_view=True
            )
        # The stage's losses compile too (training/losses.py): no fp32 copy of [B, T, V] logits.
        self.compile_losses = config.compile and self.device.type == "cuda"
        self.validation = self.stage.validation_batches()
        self.flops_per_token = training_flops_per_token(self.model_config, config.block_size) * (
            1 + self.stage.extra_forward_passes / 3
        )
        self.peak_flops = peak_flops(self.device)
        self.log = TensorBoardLog(
            self.run_dir / "tensorboard",
            self.is_main,
            # a resumed run drops what the old one logged after its checkpoint (steps > k)
            purge_step=self.step + 1 if self.step else None,
        )

    # ----- setup -----

    def _prepare_run_dir(self) -> None:
        """Refuse to mix two runs in one folder; clear leftovers of a killed run."""
        config, run_dir = self.config, self.run_dir
        if not config.resume and not config.overwrite and ckpt.has_checkpoints(run_dir):
            raise UserError(
                f"{run_dir} already holds a run; pass --resume=true to continue it, "
                "--overwrite=true to start it over, or choose another --run_name"
            )
        init_path = Path(config.init_from).resolve() if config.init_from else None
        if init_path and run_dir.resolve() in (init_path, *init_path.parents):
            raise UserError(
                f"--init_from={config.init_from} lies inside this run's own folder {run_dir}; "
                "give the new run another --run_name"
            )
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"{run_dir} is a file; choose another --run_name or --checkpoint_dir")
        if not config.resume and run_dir.exists() and not ckpt.looks_like_run_folder(run_dir):
            raise UserError(
                f"{run_dir} holds files that are not from a training run; choose another "
                "--run_name or --checkpoint_dir"
            )
        if not config.resume and run_dir.exists() and self.is_main:
            # Overwrite, or a folder without checkpoints (e.g. the logs of a run that failed
            # before its first save): nothing in it can be resumed, so start clean.
            shutil.rmtree(run_dir)
        barrier(self.dist)  # nobody creates files before rank 0 has cleared the folder
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_leftovers(run_dir)
        barrier(self.dist)

    def _check_resumable(self, saved: dict, step_dir: Path) -> None:
        differences = []
        current_model = self.model_config.to_dict()
        for key in sorted(set(current_model) | set(saved["model"])):
            if saved["model"].get(key) != current_model.get(key):
                differences.append(
                    f"model.{key} (checkpoint {saved['model'].get(key)!r}, now "
                    f"{current_model.get(key)!r})"
                )
        saved_sha = (saved.get("tokenizer") or {}).get("sha256")
        if saved_sha != self.tokenizer_sha256:
            differences.append(f"tokenizer sha256 (checkpoint {str(saved_sha)[:12]}..., now "
                               f"{self.tokenizer_sha256[:12]}...)")  # fmt: skip
        if saved.get("stage") != self.stage.name:
            differences.append(
                f"stage (checkpoint {saved.get('stage')!r}, now {self.stage.name!r})"
            )
        for key in self.config.RESUME_MUST_MATCH:
            before, now = saved["train"].get(key), getattr(self.config, key)
            if before != now:
                differences.append(f"{key} (checkpoint {before!r}, now {now!r})")
        saved_micro = (saved.get("run") or {}).get("micro_batches_per_step")
        if saved_micro is not None and saved_micro != self.micro_batches_per_step:
            differences.append(
                f"micro-batches per step (checkpoint {saved_micro}, now "
                f"{self.micro_batches_per_step}: another GPU count with --tokens_per_step=0)"
            )
        if differences:
            raise UserError(
                f"--resume: {step_dir} does not match this config: {'; '.join(differences)}. "
                "Use the checkpoint's values, or start a new run under another --run_name"
            )

    def _resume(self) -> None:
        step_dir, saved, state = ckpt.load_for_resume(
            self.run_dir, self.model, self._check_resumable, announce=self.is_main
        )
        changed = [
            f"{key} {saved['train'].get(key)!r} -> {value!r}"
            for key, value in self.config.to_dict().items()
            if key not in ("resume", "overwrite") and saved["train"].get(key) != value
        ]
        if changed:
            self._print(f"note: resuming with changed settings: {', '.join(changed)}")
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng_state(state["rng"], self.device)
        loop = state["loop"]
        self.step = state["step"]
        self.tokens_seen = loop["tokens_seen"]
        self.skipped_steps = loop["skipped_steps"]
        self.nonfinite_streak = loop["nonfinite_streak"]
        self.last_val_loss = loop["last_val_loss"]
        self.stage.load_state_dict(state.get("stage") or {})
        self.last_checkpoint = step_dir
        self._print(f"resuming from {step_dir} (step {self.step})")

    # ----- the loop -----

    def run(self) -> TrainResult:
        config = self.config
        self._print_header()
        result = TrainResult(
            self.model, self.tokenizer, self.run_dir, self.step, is_main=self.is_main
        )
        progress = tqdm(
            total=self.max_steps, initial=self.step, disable=not self.is_main, unit="step",
            desc=config.run_name, dynamic_ncols=True, file=sys.stderr,
        )  # fmt: skip
        interval_tokens, interval_seconds = 0, 0.0
        with StopRequest(announce=self.is_main) as stop, progress:
            while self.step < self.max_steps:
                started = time.perf_counter()
                loss, grad_norm, tokens, metrics, lr = self._guard_oom(self._train_step)
                interval_seconds += time.perf_counter() - started
                interval_tokens += tokens
                self.step += 1
                self.tokens_seen += tokens
                result.losses.append(loss)
                tokens_per_s = interval_tokens / max(interval_seconds, 1e-9)
                progress.update(1)
                # refresh=False: the bar redraws at its own pace, not once per step
                progress.set_postfix(
                    loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False
                )
                if self.step % config.log_interval == 0 or self.step == self.max_steps:
                    self._log_train(loss, lr, grad_norm, metrics, tokens_per_s)
                    interval_tokens, interval_seconds = 0, 0.0
                if self.step % config.eval_interval == 0 or self.step == self.max_steps:
                    self.last_val_loss = self._guard_oom(self._evaluate, progress)
                    self.last_val_step = self.step
                stopping = self._stop_requested(stop)
                due = self.step % config.checkpoint_interval == 0 or self.step == self.max_steps
                if due or stopping:
                    self._save()
                if stopping:
                    # (a rank that only heard of the signal from another rank reports SIGTERM)
                    result.stopped_by_signal = stop.signal_number or signal.SIGTERM
                    break
        self.log.flush()
        self.model.eval()
        return dataclasses.replace(
            result,
            step=self.step,
            val_loss=self.last_val_loss,
            last_checkpoint=self.last_checkpoint,
            skipped_steps=self.skipped_steps,
        )

    def _guard_oom(self, function, *args):
        try:
            return function(*args)
        except torch.cuda.OutOfMemoryError:
            raise UserError(out_of_memory_message(self.config)) from None

    def _to_device(self, batch: Batch) -> Batch:
        return {
            key: host_to_device(value, self.device) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()
        }

    def _train_step(self):
        """One optimizer step; returns (loss, grad_norm, tokens, metrics, lr).

        The only host sync is the one `.tolist()` at the end (the skip decision needs the
        loss): nothing in the micro-batch loop waits for the GPU.
        """
        config, dist, stage = self.config, self.dist, self.stage
        lr = set_hyperparameters(self.optimizer, config, self.step, self.max_steps)
        first = dist.rank * self.accumulation
        batches = [stage.train_micro_batch(self.step, first + m) for m in range(self.accumulation)]
        count = float(sum(stage.count(b) for b in batches))
        tokens = float(sum(stage.tokens(b) for b in batches))
        if dist.enabled:
            # The normalizer N counts every rank's micro-batches. It stays on the device (the
            # backward pass can use it as it is), so this all-reduce costs no host sync.
            totals = torch.tensor([count, tokens], dtype=torch.float64)  # float64: exact counts
            totals = all_reduce_sum(host_to_device(totals, self.device), dist)
            # DDP averages gradients over ranks; * world_size turns that into a sum over ranks.
            scale = (dist.world_size / totals[0].clamp(min=1.0)).float()
        else:
            totals = None
            scale = 1.0 / max(count, 1.0)

        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, torch.Tensor] = {}
        for micro_step, batch in enumerate(batches):
            batch = self._to_device(batch)
            last = micro_step == self.accumulation - 1
            no_sync = (
                self.train_model.no_sync if dist.enabled and not last else contextlib.nullcontext
            )
            with no_sync():
                with autocast(self.precision, self.device), compiled_losses(self.compile_losses):
                    batch_loss, metrics = stage.loss(self.train_model, batch)
                self.scaler.scale(batch_loss * scale).backward()
            loss_sum += batch_loss.detach().float()
            for name, value in metrics.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + value.detach().float()

        names = sorted(metric_sums)
        stats = torch.stack([loss_sum] + [metric_sums[name] for name in names])
        all_reduce_sum(stats, dist)
        self.scaler.unscale_(self.optimizer)  # no-op unless fp16
        max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        on_device = [stats.double(), grad_norm.double().reshape(1)]
        on_device += [totals] if totals is not None else []
        values = torch.cat(on_device).tolist()  # the step's one host sync
        if totals is not None:
            count, tokens = values[-2], values[-1]
        total_count = max(count, 1.0)
        loss, grad_norm = values[0] / total_count, values[len(names) + 1]
        metrics = {name: value / total_count for name, value in zip(names, values[1:])}

        if self.precision == "fp16":
            # GradScaler skips inf/nan gradients itself (that is how it finds its scale).
            finite = math.isfinite(loss)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            finite = math.isfinite(loss) and math.isfinite(grad_norm)
            if finite:
                self.optimizer.step()
        if finite:
            self.nonfinite_streak = 0
        else:
            self.skipped_steps += 1
            self.nonfinite_streak += 1
            self._print(
                f"warning: step {self.step + 1}: non-finite loss {loss} / grad norm {grad_norm}; "
                f"step skipped ({self.skipped_steps} so far)"
            )
            if self.nonfinite_streak >= config.max_nonfinite_steps:
                raise UserError(
                    f"the loss or gradient was not finite for {self.nonfinite_streak} steps in "
                    f"a row (up to step {self.step + 1}); lower --learning_rate, use "
                    "--precision=bf16 or fp32, or check the data; the last good checkpoint is "
                    f"{self.last_checkpoint or 'none'}"
                )
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, int(tokens), metrics, lr

    @torch.no_grad()
    def _evaluate(self, progress) -> float:
        """Validation loss over the fixed batches (split across ranks) + text samples."""
        stage, dist = self.stage, self.dist
        self.model.eval()
        batches = self.validation
        per_rank = math.ceil(len(batches) / dist.world_size)
        sums: dict[str, torch.Tensor] = {}
        total = 0.0
        for j in range(per_rank):
            index = dist.rank + j * dist.world_size
            # Ranks left without a batch run batch 0 with weight 0, so every rank runs the
            # same number of forwards and reports the same metric names.
            weight = 1.0 if index < len(batches) else 0.0
            batch = batches[index if index < len(batches) else 0]
            total += weight * stage.count(batch)
            with autocast(self.precision, self.device), compiled_losses(self.compile_losses):
                loss_sum, metrics = stage.loss(self.eval_model, self._to_device(batch))
            for name, value in {"loss": loss_sum, **metrics}.items():
                sums[name] = sums.get(name, 0.0) + weight * value.detach().float()
        names = sorted(sums)
        stats = torch.stack([torch.tensor(total, device=self.device)] + [sums[n] for n in names])
        stats = all_reduce_sum(stats, dist).tolist()
        count = max(stats[0], 1.0)
        values = {name: value / count for name, value in zip(names, stats[1:])}
        val_loss = values.pop("loss")
        scalars = {"val/loss": val_loss} | {f"val/{name}": v for name, v in values.items()}
        if stage.reports_perplexity:
            scalars["val/ppl"] = math.exp(min(val_loss, 50.0))
        self.log.scalars(scalars, self.step)
        if self.is_main:
            samples = self._text_samples()
            self.log.texts(samples, self.step)
            summary = " | ".join(f"{name} {value:.4f}" for name, value in scalars.items())
            progress.write(f"step {self.step}: {summary}")
            for name, text in samples.items():
                progress.write(f"  [{name}] {text!r}")
        self.model.train()
        return val_loss

    def _text_samples(self) -> dict[str, str]:
        # Sampling must not move the training RNG, or a resumed run would diverge.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), autocast(self.precision, self.device):
            return self.stage.text_samples(self.model)

    def _stop_requested(self, stop: StopRequest) -> bool:
        """True on every rank as soon as any rank got a signal (they must stop together)."""
        if not self.dist.enabled:
            return stop.requested
        flag = torch.tensor(1.0 if stop.requested else 0.0, device=self.device)
        return bool(all_reduce_max(flag, self.dist).item() > 0)

    def _log_train(self, loss, lr, grad_norm, metrics, tokens_per_s) -> None:
        scalars = {
            "train/loss": loss,
            "train/lr": lr,
            "train/grad_norm": grad_norm,
            "perf/tokens_per_s": tokens_per_s,
            "perf/peak_memory_gb": peak_memory_gb(self.device),
        }
        if self.peak_flops:
            per_device = tokens_per_s / self.dist.world_size
            scalars["perf/mfu"] = per_device * self.flops_per_token / self.peak_flops
        self.log.scalars(scalars | metrics, self.step)

    # ----- checkpoints -----

    def _save(self) -> None:
        if self.is_main:
            config_json = {
                "train": self.config.to_dict(),
                "stage": self.stage.name,
                "step": self.step,
                "tokenizer": {
                    "sha256": self.tokenizer_sha256,
                    "profile": self.stage.tokenizer_profile,
                },
                # val_loss only when measured on these very weights: `best` is chosen by it
                "metrics": {
                    "val_loss": self.last_val_loss if self.last_val_step == self.step else None,
                    "tokens_seen": self.tokens_seen,
                },
                "run": {
                    "world_size": self.dist.world_size,
                    "accumulation_steps": self.accumulation,
                    "micro_batches_per_step": self.micro_batches_per_step,
                    "max_steps": self.max_steps,
                    "precision": self.precision,
                },
            }
            state = {
                "format_version": 1,
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": ckpt.capture_rng_state(self.device),
                "loop": {
                    "tokens_seen": self.tokens_seen,
                    "skipped_steps": self.skipped_steps,
                    "nonfinite_streak": self.nonfinite_streak,
                    "last_val_loss": self.last_val_loss,
                },
                "stage": self.stage.state_dict(),
                "data": {"seed": self.config.seed, "next_step": self.step,
                         "micro_batches_per_step": self.micro_batches_per_step},
            }  # fmt: skip
            self.last_checkpoint = ckpt.save_checkpoint(
                self.run_dir, self.step, self.model, config_json, self.tokenizer_path, state,
                self.config.keep_last,
            )  # fmt: skip
        else:
            self.last_checkpoint = self.run_dir / ckpt.step_dir_name(self.step)
        barrier(self.dist)

    # ----- output -----

    def _print(self, text: str) -> None:
        if self.is_main:
            tqdm.write(text, file=sys.stderr)

    def _print_header(self) -> None:
        if not self.is_main:
            return
        config = self.config
        tokens_per_step = self.micro_batches_per_step * config.micro_batch_size * config.block_size
        print(f"config ({type(config).__name__}):\n{config_to_text(config)}")
        print(
            f"model: {self.model.num_parameters() / 1e6:.2f}M parameters "
            f"({self.model.num_parameters(non_embedding=True) / 1e6:.2f}M non-embedding), "
            f"{self.model_config.to_dict()}"
        )
        print(
            f"device {self.device}, precision {self.precision}, {self.dist.world_size} process(es)"
            f", {self.accumulation} micro-batch(es) of {config.micro_batch_size} x "
            f"{config.block_size} per process per step = {tokens_per_step:,} tokens/step, "
            f"{self.max_steps} steps; run folder {self.run_dir}",
            flush=True,
        )
