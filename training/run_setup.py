"""What a run is made of, worked out before anything trains: the RunContext a stage is built
from (tokenizer, model shape, precision, micro-batches per step) and the starting weights.

Which model a run trains:

- A fresh run: `from_preset(model_preset, **model_overrides)` with vocab_size taken from the
  tokenizer and block_size from the run config; weights from the model's own init (seeded).
- `--init_from checkpoints/<run>`: the checkpoint's architecture and weights (weights only:
  the optimizer, schedule and step start fresh). Its tokenizer must be the run's tokenizer.
  Resuming such a run reads the architecture from the run's own checkpoint instead (its weights
  load over the start anyway), so the --init_from folder may be gone by then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from common.atomic import sha256_file
from common.errors import UserError
from model.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint
from model.config import ModelConfig, from_preset
from model.transformer import Transformer
from tokenizer.encoding import load_tokenizer
from training import checkpoint as ckpt
from training.distributed import Distributed
from training.precision import resolve_precision
from training.stage import RunContext


@dataclass
class InitSource:
    """Where the starting weights come from."""

    model_config: ModelConfig
    step_dir: Path | None = None  # the --init_from step folder, None for a fresh init


def newest_model_config(run_dir: Path) -> ModelConfig | None:
    """The model of the newest readable checkpoint in run_dir, if any."""
    for step_dir in ckpt.resume_candidates(run_dir):
        try:
            return ModelConfig.from_dict(read_checkpoint_config(step_dir)["model"])
        except (UserError, OSError, KeyError, TypeError, ValueError):
            continue  # damaged: resuming falls back past it too (training/checkpoint.py)
    return None


def resolve_init(config, tokenizer: Tokenizer, tokenizer_sha256: str) -> InitSource:
    vocab_size = tokenizer.get_vocab_size()
    if config.init_from and config.resume:
        resumed = newest_model_config(Path(config.checkpoint_dir) / config.run_name)
        if resumed is not None:  # resume then checks it against the tokenizer and config
            return InitSource(model_config=resumed)
    if config.init_from:
        step_dir = resolve_checkpoint(config.init_from)
        saved = read_checkpoint_config(step_dir)
        model_config = ModelConfig.from_dict(saved["model"])
        if model_config.vocab_size != vocab_size:
            raise UserError(
                f"--init_from={config.init_from}: the model's vocabulary has "
                f"{model_config.vocab_size} tokens but {config.tokenizer_path} has {vocab_size}; "
                "use the tokenizer that model was trained with"
            )
        saved_sha = (saved.get("tokenizer") or {}).get("sha256")
        if saved_sha is not None and saved_sha != tokenizer_sha256:
            raise UserError(
                f"--init_from={config.init_from} was trained with a different tokenizer than "
                f"{config.tokenizer_path} (sha256 {saved_sha[:12]}... vs "
                f"{tokenizer_sha256[:12]}...); use the same tokenizer.json"
            )
        if config.block_size > model_config.block_size:
            raise UserError(
                f"--block_size={config.block_size} exceeds the context of --init_from's model "
                f"({model_config.block_size}); use --block_size={model_config.block_size} or less"
            )
        if config.model_overrides:
            raise UserError("--model_overrides cannot change a model loaded with --init_from")
        return InitSource(model_config=model_config, step_dir=step_dir)
    if not config.model_preset:
        raise UserError(
            "no model: set --model_preset (debug, 15m, 124m, 170m) or --init_from=<checkpoint>"
        )
    for key in ("vocab_size", "block_size"):
        if key in config.model_overrides:
            raise UserError(
                f"--model_overrides may not set {key}: "
                + ("it comes from the tokenizer" if key == "vocab_size" else "use --block_size")
            )
    model_config = from_preset(
        config.model_preset,
        **{**config.model_overrides, "vocab_size": vocab_size, "block_size": config.block_size},
    )
    return InitSource(model_config=model_config)


def build_model(source: InitSource, seed: int, device: torch.device) -> Transformer:
    """The starting model on `device`, in train mode (init on CPU, so it is device-independent)."""
    if source.step_dir is not None:
        model, _, _ = load_model(source.step_dir, device="cpu")
    else:
        torch.manual_seed(seed)
        model = Transformer(source.model_config)
    return model.to(device).train()


def accumulation_steps(config, world_size: int) -> int:
    """Micro-batches per rank per step, so a step holds config.optimizer_step_tokens()."""
    step_tokens = config.optimizer_step_tokens()
    if step_tokens == 0:
        return 1
    per_round = config.micro_batch_size * config.block_size * world_size
    if step_tokens % per_round:
        nearest = max(per_round, round(step_tokens / per_round) * per_round)
        raise UserError(
            f"{config.step_size_flag(step_tokens)} is not a multiple of micro_batch_size"
            f" x block_size x processes = {config.micro_batch_size} x {config.block_size} x "
            f"{world_size} = {per_round} tokens; use e.g. {config.step_size_flag(nearest)}"
        )
    return step_tokens // per_round


def run_context(config, dist: Distributed) -> tuple[RunContext, InitSource]:
    """Tokenizer, model shape, precision and batch geometry: what a stage is built from; and
    where the starting weights come from."""
    tokenizer_path = Path(config.tokenizer_path)
    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer_sha256 = sha256_file(tokenizer_path)
    init = resolve_init(config, tokenizer, tokenizer_sha256)
    accumulation = accumulation_steps(config, dist.world_size)
    tokens_per_step = accumulation * dist.world_size * config.micro_batch_size * config.block_size
    max_steps = math.ceil(config.max_tokens / tokens_per_step) if config.max_tokens else None
    context = RunContext(
        config=config,
        model_config=init.model_config,
        tokenizer=tokenizer,
        tokenizer_path=tokenizer_path,
        tokenizer_sha256=tokenizer_sha256,
        dist=dist,
        precision=resolve_precision(config.precision, dist.device),
        accumulation_steps=accumulation,
        micro_batches_per_step=accumulation * dist.world_size,
        max_steps=max_steps or config.max_steps,
    )
    return context, init
