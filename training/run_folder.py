"""Run-folder policy: when a run may start in checkpoints/<run_name>, and what --resume needs.

- A new run refuses a folder that holds a run (pass --resume or --overwrite) or files that are
  not a run's; --overwrite and a folder without checkpoints (the logs of a run that failed
  before its first save) are cleared. --resume of a folder without a checkpoint is an error
  that creates nothing.
- A checkpoint (`save`) describes itself: config.json records the run config, the stage, the
  tokenizer and the run's geometry next to the model; training_state.pt holds the optimizer,
  scaler, RNG, loop and stage state.
- --resume continues from the newest readable checkpoint (training/checkpoint.py falls back
  past broken ones) only if it matches this run: the model shape, the tokenizer, the stage, the
  settings of `config.RESUME_MUST_MATCH` and the micro-batches per step; otherwise a one-line
  error lists every difference. Other changed settings (say --max_steps) are printed.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from common.errors import UserError
from training import checkpoint as ckpt
from training.distributed import Distributed, barrier


@dataclass
class LoopState:
    """The training loop's own state: saved in every checkpoint, restored by --resume."""

    step: int = 0  # optimizer steps done
    tokens_seen: int = 0
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient
    nonfinite_streak: int = 0  # of those, in a row up to now
    last_val_loss: float | None = None
    last_val_step: int | None = None  # the step last_val_loss was measured at

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict, step: int) -> LoopState:
        known = {key: saved[key] for key in cls.__dataclass_fields__ if key in saved}
        return cls(**{**known, "step": step})


def prepare_run_folder(config, run_dir: Path, dist: Distributed) -> None:
    """Refuse to mix two runs in one folder; clear leftovers of a killed run (see above)."""
    if config.resume and not ckpt.has_checkpoints(run_dir):
        raise UserError(
            f"--resume: no checkpoint in {run_dir} to resume from; drop --resume to start a "
            "new run (with --overwrite to clear that folder)"
        )
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
    if not config.resume and run_dir.exists() and dist.is_main:
        shutil.rmtree(run_dir)  # nothing in it can be resumed: start clean
    barrier(dist)  # nobody creates files before rank 0 has cleared the folder
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_leftovers(run_dir)
    barrier(dist)


# What a checkpoint from before a field existed ran with.
BEFORE_THE_FIELD = {"optimizer": "adamw"}


def saved_train_config(saved_train: dict, config):
    """The checkpoint's training config, as the running config's class (fields it lacks: the
    value they had before they existed, else the running value)."""
    known = {f.name for f in fields(config)}
    values = BEFORE_THE_FIELD | {k: v for k, v in saved_train.items() if k in known}
    return replace(config, **{k: v for k, v in values.items() if k in known})


def resume_differences(saved: dict, context, stage_name: str) -> list[str]:
    """What keeps checkpoint config `saved` from continuing the run of `context`, one item each."""
    differences, config = [], context.config
    model = context.model_config.to_dict()
    for key in sorted(set(model) | set(saved["model"])):
        if saved["model"].get(key) != model.get(key):
            differences.append(
                f"model.{key} (checkpoint {saved['model'].get(key)!r}, now {model.get(key)!r})"
            )
    saved_sha = (saved.get("tokenizer") or {}).get("sha256")
    if saved_sha != context.tokenizer_sha256:
        differences.append(f"tokenizer sha256 (checkpoint {str(saved_sha)[:12]}..., now "
                           f"{context.tokenizer_sha256[:12]}...)")  # fmt: skip
    if saved.get("stage") != stage_name:
        differences.append(f"stage (checkpoint {saved.get('stage')!r}, now {stage_name!r})")
    saved_config = saved_train_config(saved["train"], config)
    for key in config.RESUME_MUST_MATCH:
        before, now = getattr(saved_config, key), getattr(config, key)
        if key == "tokens_per_step":  # the step's size, however it was given (DPO: in pairs)
            before, now = saved_config.optimizer_step_tokens(), config.optimizer_step_tokens()
        if before != now:
            differences.append(f"{key} (checkpoint {before!r}, now {now!r})")
    saved_run = saved.get("run") or {}
    saved_micro = saved_run.get("micro_batches_per_step")
    if not differences and saved_micro not in (None, context.micro_batches_per_step):
        # Same step geometry, other micro-batches per step: the process count changed while
        # --tokens_per_step=0 (one micro-batch per process) ties the step to it.
        differences.append(
            f"processes (checkpoint {saved_run.get('world_size')}, now {context.world_size}: "
            f"with --tokens_per_step=0 a step is one micro-batch per process, {saved_micro} "
            f"then, {context.micro_batches_per_step} now)"
        )
    return differences


def changed_settings(saved_train: dict, config) -> list[str]:
    """Settings that differ from the checkpoint's but may (say --max_steps), as `k a -> b`."""
    return [
        f"{key} {saved_train.get(key)!r} -> {value!r}"
        for key, value in config.to_dict().items()
        if key not in ("resume", "overwrite") and saved_train.get(key) != value
    ]


def resume(parts) -> tuple[Path, LoopState]:
    """Load the newest usable checkpoint of the run folder into the run's parts (the Trainer:
    its run_dir, context, stage, model, optimizer, scaler); returns (its folder, loop state)."""
    context = parts.context

    def announce(text: str) -> None:
        if context.is_main:
            print(text, file=sys.stderr)

    def check(saved: dict, step_dir: Path) -> None:
        if differences := resume_differences(saved, context, parts.stage.name):
            raise UserError(
                f"--resume: {step_dir} does not match this config: {'; '.join(differences)}. "
                "Use the checkpoint's values, or start a new run under another --run_name"
            )

    step_dir, saved, state = ckpt.load_for_resume(
        parts.run_dir, parts.model, check, context.is_main
    )
    if changed := changed_settings(saved["train"], context.config):
        announce(f"note: resuming with changed settings: {', '.join(changed)}")
    parts.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    ckpt.restore_rng_state(state["rng"], context.device)
    parts.stage.load_state_dict(state.get("stage") or {})
    announce(f"resuming from {step_dir} (step {state['step']})")
    return step_dir, LoopState.from_dict(state["loop"], state["step"])


def save(parts) -> Path:
    """Write the run's checkpoint of this step (rank 0 only); returns its folder.

    `parts` is the Trainer: its context, stage, loop, model, optimizer, scaler and run_dir.
    """
    loop, context, config = parts.loop, parts.context, parts.context.config
    config_json = {
        "train": config.to_dict(),
        "stage": parts.stage.name,
        "step": loop.step,
        "tokenizer": {"sha256": context.tokenizer_sha256},
        # val_loss only when measured on these very weights: `best` is chosen by it
        "metrics": {
            "val_loss": loop.last_val_loss if loop.last_val_step == loop.step else None,
            "tokens_seen": loop.tokens_seen,
        },
        "run": {
            "world_size": context.world_size,
            "accumulation_steps": context.accumulation_steps,
            "micro_batches_per_step": context.micro_batches_per_step,
            "max_steps": context.max_steps,
            "precision": context.precision,
        },
    }
    state = {
        "format_version": 1,
        "step": loop.step,
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng": ckpt.capture_rng_state(context.device),
        "loop": loop.to_dict(),
        "stage": parts.stage.state_dict(),
        "data": {"seed": config.seed, "next_step": loop.step,
                 "micro_batches_per_step": context.micro_batches_per_step},
    }  # fmt: skip
    return ckpt.save_checkpoint(
        parts.run_dir, loop.step, parts.model, config_json, context.tokenizer_path, state,
        config.keep_last,
    )  # fmt: skip
