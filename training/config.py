"""The run config every training stage shares, and its `--key=value` command-line parser.

A training script puts a config instance at the very top of the file (the constants a user
edits), then calls `parse_config(CONFIG, sys.argv[1:], __doc__)`:

    --key=value    set a field (dashes or underscores: --init-from=... == --init_from=...)
    --key value    the same
    --flag         a bool field set to true (--flag=false turns it off)
    --help         print every field with its type, default and help, then exit

Values are type-checked against the field's annotation (int, float, str, bool, Optional[...]
accepts "none", dict accepts `k=v,k=v` or a JSON object); an unknown key is an error that
lists the closest field names; a float must be finite. SFT and DPO subclass `TrainConfig` to
add their own fields (declare each with `option(help)` so --help can explain it).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import ClassVar

from common.errors import UserError
from evaluation.tasks import resolve_tasks
from training.data_mixture import parse_data_dirs

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SCHEDULES = ("cosine", "wsd")
OPTIMIZERS = ("adamw", "muon")


def option(help: str, *, default=MISSING, choices: tuple | None = None):
    """A dataclass field with a help text (shown by --help) and optional allowed values.

    Without `default` the field is required: the script's CONFIG sets it. A default belongs only
    to a field that no script's recipe sets (a switch like --resume, or --device), so each value
    is written in one place.
    """
    metadata = {"help": help, "choices": choices}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True)
class TrainConfig:
    """Every setting of a training run. The values live in the scripts' CONFIG blocks
    (pre_training.py, post_training_sft.py, post_training_dpo.py): this class declares the
    fields, their types, help and checks."""

    # Fields that must equal the checkpoint's for --resume to continue the same run exactly
    # (the model, tokenizer and stage are compared too). Subclasses may add their own.
    RESUME_MUST_MATCH: ClassVar[tuple[str, ...]] = (
        "block_size", "micro_batch_size", "tokens_per_step", "seed", "optimizer",
    )  # fmt: skip

    # --- where things are ---
    run_name: str = option("run folder name: outputs go to checkpoint_dir/run_name")
    checkpoint_dir: str = option("folder that holds one sub-folder per run")
    data_dir: str = option(
        "tokenized dataset folder (train/ and validation/ splits); pre-training and SFT also "
        "take a weighted mixture, e.g. data/fineweb/tokenized:0.8,data/pre_training/tokenized:0.2"
    )
    tokenizer_path: str = option("tokenizer.json the data was tokenized with")
    # --- the model ---
    model_preset: str | None = option(
        "model size preset from model/config.py (debug, 15m, 124m, 170m); unused (and recorded "
        "as none) when --init_from gives the model",
        default=None,
    )
    model_overrides: dict = option(
        "ModelConfig fields to change, e.g. n_layer=4,n_embd=256 (vocab comes from tokenizer)",
        default={},
    )
    init_from: str | None = option(
        "start from this checkpoint's weights (run or step folder); fresh optimizer", default=None
    )
    resume: bool = option(
        "continue the run in checkpoint_dir/run_name from its latest step", default=False
    )
    overwrite: bool = option(
        "delete an existing run folder of the same name and start over", default=False
    )
    # --- batch and budget ---
    block_size: int = option("tokens per training sequence (context length)")
    micro_batch_size: int = option("sequences per forward pass per GPU (lower it on OOM)")
    tokens_per_step: int = option(
        "tokens per optimizer step; accumulation = this / (micro_batch_size*block_size*GPUs); "
        "0 = one micro-batch per GPU"
    )
    max_steps: int = option("optimizer steps to train (ignored when max_tokens > 0)")
    max_tokens: int = option(
        "token budget; > 0 sets max_steps = ceil(max_tokens/tokens_per_step)", default=0
    )
    # --- optimizer and schedule ---
    learning_rate: float = option("peak learning rate (after warmup)")
    min_lr: float = option("learning rate at the end of the decay")
    warmup_steps: int = option("steps of linear warmup from 0 to learning_rate")
    schedule: str = option(
        "cosine: decay from warmup to the end; wsd: warmup-stable-decay", choices=SCHEDULES
    )
    decay_fraction: float = option("wsd only: fraction of steps spent in the final decay")
    weight_decay: float = option("AdamW weight decay (never on norms and embeddings)")
    beta1: float = option("AdamW beta1")
    beta2: float = option("AdamW beta2")
    grad_clip: float = option("clip the global gradient norm to this (0 = off)")
    optimizer: str = option(
        "muon: Muon for the blocks' weight matrices + AdamW for embedding, head and norms; "
        "adamw: AdamW for everything, at learning_rate (see training/optimizer.py)",
        choices=OPTIMIZERS,
    )
    muon_lr: float = option("muon: peak learning rate of the blocks' matrices (any width)")
    embedding_lr: float = option(
        "muon: AdamW peak learning rate of the token embedding (and a tied head) at width "
        "768; scaled by sqrt(768 / n_embd)"
    )
    head_lr: float = option(
        "muon: AdamW peak learning rate of an untied LM head at width 768; scaled by "
        "sqrt(768 / n_embd) (the norm gains use learning_rate)"
    )
    muon_momentum: float = option("muon: momentum after its warm-up")
    muon_momentum_start: float = option("muon: momentum at step 0")
    muon_momentum_warmup: int = option(
        "muon: steps over which momentum rises linearly from muon_momentum_start"
    )
    muon_weight_decay: float = option("muon: decoupled weight decay of the matrices")
    muon_ns_steps: int = option("muon: Newton-Schulz iterations that orthogonalise an update")
    max_nonfinite_steps: int = option(
        "stop after this many steps in a row with a non-finite loss or gradient", default=5
    )
    # --- speed and memory ---
    precision: str = option(
        "auto = bf16 if the GPU supports it, else fp16 + GradScaler; fp32 on CPU",
        choices=PRECISIONS,
    )
    compile: bool = option("torch.compile the model for training (faster on GPU)")
    activation_checkpointing: bool = option(
        "recompute activations in the backward pass: less memory, ~30% slower"
    )
    device: str = option(
        "auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...", default="auto"
    )
    seed: int = option("seed of the model init and of the data order")
    # --- evaluation, logging, checkpoints ---
    eval_interval: int = option("evaluate (validation loss + text samples) every N steps")
    eval_batches: int = option("validation micro-batches per evaluation (a fixed set)")
    log_interval: int = option("write train scalars to TensorBoard every N steps")
    sample_max_new_tokens: int = option("tokens generated for each text sample")
    checkpoint_interval: int = option("save a checkpoint every N steps (and at the end)")
    keep_last: int = option("checkpoints to keep (the best by validation loss is also kept)")
    # --- benchmark scores during the run (training/task_scores.py) ---
    eval_tasks: str = option(
        "benchmark tasks scored during the run, comma-separated: core, sample_world, hellaswag, "
        "... (python3 -m evaluation --help lists them); empty = none. TensorBoard: "
        "eval/<task>/<metric>"
    )
    eval_tasks_interval: int = option("score eval_tasks every N steps (and at the last step)")
    eval_tasks_limit: int = option("examples scored per task, the first N (0 = all of them)")
    eval_data_dir: str = option(
        "the tasks' datasets (python3 -m dataset.evaluation.download_dataset); a missing one is "
        "left out with a warning at the start"
    )

    def check(self) -> None:
        """UserError for values no run can use; subclasses extend this (call super().check()).

        It only reads: a config means the same after any number of checks."""
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"--{f.name}={value} must be a finite number")
            if choices and value not in choices:
                raise UserError(f"--{f.name}={value!r} is not one of {', '.join(choices)}")
        for name in (
            "block_size", "micro_batch_size", "max_steps", "eval_interval", "eval_batches",
            "log_interval", "checkpoint_interval", "keep_last", "max_nonfinite_steps",
            "eval_tasks_interval",
        ):  # fmt: skip
            if getattr(self, name) <= 0:
                raise UserError(f"--{name}={getattr(self, name)} must be a positive integer")
        if self.eval_tasks.strip():  # an unknown task is a UserError now, before any work
            resolve_tasks(self.eval_tasks, chat=False)
        for name in ("tokens_per_step", "max_tokens", "warmup_steps", "sample_max_new_tokens",
                     "eval_tasks_limit"):  # fmt: skip
            if getattr(self, name) < 0:
                raise UserError(f"--{name}={getattr(self, name)} must be >= 0")
        if not self.learning_rate > 0 or not 0 <= self.min_lr <= self.learning_rate:
            raise UserError(
                f"--learning_rate={self.learning_rate} must be > 0 and --min_lr={self.min_lr} "
                "between 0 and it"
            )
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"--decay_fraction={self.decay_fraction} must be in (0, 1]")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise UserError(f"--beta1={self.beta1} and --beta2={self.beta2} must be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise UserError("--weight_decay and --grad_clip must be >= 0")
        if not (self.muon_lr > 0 and self.embedding_lr > 0 and self.head_lr > 0):
            raise UserError("--muon_lr, --embedding_lr and --head_lr must be > 0")
        if not (0 <= self.muon_momentum_start < 1 and 0 <= self.muon_momentum < 1):
            raise UserError(
                f"--muon_momentum={self.muon_momentum} and --muon_momentum_start="
                f"{self.muon_momentum_start} must be in [0, 1)"
            )
        if self.muon_momentum_warmup < 0 or self.muon_weight_decay < 0 or self.muon_ns_steps < 1:
            raise UserError(
                "--muon_momentum_warmup and --muon_weight_decay must be >= 0, --muon_ns_steps >= 1"
            )
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other; pick one")
        parse_data_dirs(self.data_dir)  # weights and duplicates, before any file is read

    def optimizer_step_tokens(self) -> int:
        """Tokens per optimizer step (0 = one micro-batch per process); DPO sizes it in pairs."""
        return self.tokens_per_step

    def step_size_flag(self, tokens: int) -> str:
        """The command-line setting that makes a step `tokens` long."""
        return f"--tokens_per_step={tokens}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_to_text(config) -> str:
    """`key = value` lines, for the start-of-run printout."""
    width = max(len(f.name) for f in dataclasses.fields(config))
    return "\n".join(
        f"  {f.name:<{width}} = {getattr(config, f.name)!r}" for f in dataclasses.fields(config)
    )


def help_text(config, description: str | None = None) -> str:
    hints = typing.get_type_hints(type(config))
    lines = [description.strip(), ""] if description else []
    lines.append("Options (--key=value; current value in brackets):")
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        extra = f" (one of: {', '.join(choices)})" if choices else ""
        lines.append(f"  --{f.name}: {_type_name(hints[f.name])} [{getattr(config, f.name)!r}]")
        lines.append(f"      {f.metadata.get('help', '')}{extra}")
    return "\n".join(lines)


def parse_config(default_config, argv: list[str], description: str | None = None):
    """A copy of `default_config` with `--key=value` overrides applied and checked.

    `--help` prints help_text and exits 0. Raises UserError on unknown keys or bad values.
    """
    fields = {f.name: f for f in dataclasses.fields(default_config)}
    hints = typing.get_type_hints(type(default_config))
    overrides: dict = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg in ("-h", "--help"):
            print(help_text(default_config, description))
            sys.exit(0)
        if not arg.startswith("--") or arg == "--":
            raise UserError(f"unexpected argument {arg!r}; options look like --key=value")
        key, has_value, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
            raise UserError(f"unknown option --{key}{hint} (see --help for the list)")
        kind = hints[key]
        if not has_value:
            if _base_type(kind) is bool:
                value = "true"
            elif index < len(argv):
                value = argv[index]
                index += 1
            else:
                raise UserError(f"--{key} needs a value (--{key}=VALUE)")
        overrides[key] = _parse_value(key, value, kind)
    config = dataclasses.replace(default_config, **overrides)
    config.check()
    return config


def _base_type(kind):
    """The type inside Optional[...] (X | None), else the type itself."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if _is_optional(kind) and len(args) == 1:
        return args[0]
    return typing.get_origin(kind) or kind


def _is_optional(kind) -> bool:
    origin = typing.get_origin(kind)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)


def _type_name(kind) -> str:
    name = getattr(_base_type(kind), "__name__", str(kind))
    return f"{name} or none" if _is_optional(kind) else name


def _parse_value(key: str, text: str, kind):
    if _is_optional(kind) and text.strip().lower() in ("none", "null", ""):
        return None
    base = _base_type(kind)
    try:
        if base is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is int:
            try:
                return int(text)
            except ValueError:
                number = float(text)  # allow 3.5e9 for token budgets, if it is a whole number
                if not math.isfinite(number) or not number.is_integer():
                    raise
                return int(number)
        if base is float:
            return float(text)
        if base is str:
            return text
        if base is dict:
            return _parse_mapping(text)
    except ValueError:
        raise UserError(
            f"--{key}={text!r} is not a valid {_type_name(kind)}"
            + (" (use true or false)" if base is bool else "")
        ) from None
    raise UserError(f"--{key}: unsupported option type {kind}")


def _parse_mapping(text: str) -> dict:
    """`{"n_layer": 4}` (JSON) or `n_layer=4,n_embd=256` (values read as JSON when they parse)."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError from None
        if not isinstance(value, dict):
            raise ValueError
        return value
    result = {}
    for item in text.split(","):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError
        try:
            result[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            result[name.strip()] = raw.strip()
    return result
