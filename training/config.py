"""The run config every stage shares, and its command line.

A training script puts a config at its top (the constants a user edits) and calls
`parse_config(CONFIG, sys.argv[1:], __doc__)`: `--key=value` or `--key value` (dashes or
underscores: --init-from == --init_from), a bare `--flag` sets a bool, `--help` lists every
field. Values are checked against the field's type ("none" for an optional one, `k=v,k=v` or
JSON for a dict); an unknown key names the closest fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import typing
from dataclasses import MISSING, dataclass, field

from common.errors import UserError
from evaluation.tasks import resolve_tasks
from training.data import parse_data_dirs

OPTIMIZERS = ("adamw", "muon")
BOOLEANS = dict.fromkeys(("true", "1", "yes", "on"), True)
BOOLEANS |= dict.fromkeys(("false", "0", "no", "off"), False)


def option(help: str, *, default=MISSING, choices=None, positive=False, at_least=None, below=None):
    """A field with its --help text and the values check() accepts (`at_least`, `below` are
    bounds). Without a default the scripts' CONFIG must set it."""
    metadata = dict(help=help, choices=choices, positive=positive, at_least=at_least, below=below)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True)
class TrainConfig:
    """Every setting of a training run (the values: the scripts' CONFIG blocks)."""

    # where things are
    run_name: str = option("run folder name: outputs go to checkpoint_dir/run_name")
    checkpoint_dir: str = option("folder that holds one sub-folder per run")
    data_dir: str = option("tokenized dataset folder, or a weighted mixture a:0.8,b:0.2")
    tokenizer_path: str = option("tokenizer.json the data was tokenized with")
    # the model
    model_preset: str | None = option("debug, 15m, 124m, 170m; none: --init_from's", default=None)
    model_overrides: dict = option("model fields to change, e.g. n_layer=4,n_embd=256", default={})
    init_from: str | None = option("start from this checkpoint's weights only", default=None)
    resume: bool = option("continue checkpoint_dir/run_name from its latest step", default=False)
    overwrite: bool = option("delete a run folder of the same name and start over", default=False)
    # batch and budget
    block_size: int = option("tokens per training sequence (context length)", positive=True)
    micro_batch_size: int = option("sequences per forward pass per GPU (OOM: lower)", positive=True)
    tokens_per_step: int = option("tokens per step (0: one micro-batch per GPU)", at_least=0)
    max_steps: int = option("optimizer steps to train (unless max_tokens > 0)", positive=True)
    max_tokens: int = option("token budget; > 0 sets max_steps", default=0, at_least=0)
    # optimizer and schedule (training/optimizer.py)
    learning_rate: float = option("peak lr of the norm gains (adamw: of all)", positive=True)
    min_lr: float = option("learning rate at the end of the decay", at_least=0)
    warmup_steps: int = option("steps of linear warmup from 0 to the peak", at_least=0)
    schedule: str = option("cosine or wsd (warmup-stable-decay)", choices=("cosine", "wsd"))
    decay_fraction: float = option("wsd: fraction of steps in the final decay", positive=True)
    weight_decay: float = option("AdamW weight decay (never on norms, embeddings)", at_least=0)
    beta1: float = option("AdamW beta1", at_least=0, below=1)
    beta2: float = option("AdamW beta2", at_least=0, below=1)
    grad_clip: float = option("clip the global gradient norm to this (0 = off)", at_least=0)
    optimizer: str = option("muon (+ AdamW off the blocks' matrices) or adamw", choices=OPTIMIZERS)
    muon_lr: float = option("muon: peak lr of the blocks' matrices (any width)", positive=True)
    embedding_lr: float = option("muon: peak lr of the embedding at width 768", positive=True)
    head_lr: float = option("muon: peak lr of an untied LM head at width 768", positive=True)
    muon_momentum: float = option("muon: momentum after its warm-up", at_least=0, below=1)
    muon_momentum_start: float = option("muon: momentum at step 0", at_least=0, below=1)
    muon_momentum_warmup: int = option("muon: steps of the momentum's warm-up", at_least=0)
    muon_weight_decay: float = option("muon: decoupled weight decay", at_least=0)
    muon_ns_steps: int = option("muon: Newton-Schulz iterations per update", positive=True)
    max_nonfinite_steps: int = option("stop after N non-finite steps", default=5, positive=True)
    # speed and memory
    precision: str = option(
        "auto: bf16, else fp16 + GradScaler on GPUs, fp32 on CPU",
        choices=("auto", "bf16", "fp16", "fp32"),
    )
    compile: bool = option("torch.compile the model for training (faster on GPU)")
    activation_checkpointing: bool = option("recompute activations: less memory, ~30% slower")
    device: str = option("auto (cuda if available, else cpu), cpu, cuda or cuda:N", default="auto")
    seed: int = option("seed of the model init and of the data order")
    # evaluation, logging, checkpoints
    eval_interval: int = option("validation loss and text samples every N steps", positive=True)
    eval_batches: int = option("validation micro-batches (a fixed set)", positive=True)
    log_interval: int = option("write train scalars to TensorBoard every N steps", positive=True)
    sample_max_new_tokens: int = option("tokens generated for each text sample", at_least=0)
    checkpoint_interval: int = option("checkpoint every N steps and at the end", positive=True)
    keep_last: int = option("checkpoints kept (and the best by validation loss)", positive=True)
    # benchmark scores during the run (training/task_scores.py): eval/<task>/<metric>
    eval_tasks: str = option("tasks scored during the run, e.g. core (empty: none)")
    eval_tasks_interval: int = option("score them every N steps and at the end", positive=True)
    eval_tasks_limit: int = option("examples scored per task, the first N (0: all)", at_least=0)
    eval_data_dir: str = option("the tasks' datasets (a missing one is left out, with a warning)")

    def check(self) -> None:
        """UserError for values no run can use (subclasses extend it); it only reads."""
        for f in dataclasses.fields(self):
            name, value, rule = f.name, getattr(self, f.name), f.metadata
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"--{name}={value} must be a finite number")
            if rule["choices"] and value not in rule["choices"]:
                raise UserError(f"--{name}={value!r} is not one of {', '.join(rule['choices'])}")
            if rule["positive"] and not value > 0:
                raise UserError(f"--{name}={value} must be positive")
            if rule["at_least"] is not None and not value >= rule["at_least"]:
                raise UserError(f"--{name}={value} must be >= {rule['at_least']}")
            if rule["below"] is not None and not value < rule["below"]:
                raise UserError(f"--{name}={value} must be below {rule['below']}")
        if self.min_lr > self.learning_rate:
            raise UserError(f"--min_lr={self.min_lr} must not exceed --learning_rate")
        if self.decay_fraction > 1:
            raise UserError(f"--decay_fraction={self.decay_fraction} must be at most 1")
        self.micro_batches_per_step(world_size=1)  # a step of whole micro-batches
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other; pick one")
        if self.eval_tasks.strip():
            resolve_tasks(self.eval_tasks, chat=False)  # an unknown task: UserError, now
        parse_data_dirs(self.data_dir)  # weights and duplicates, before any file is read

    def micro_batches_per_step(self, world_size: int) -> int:
        """Micro-batches of all processes in one optimizer step of tokens_per_step."""
        return whole_micro_batches(
            "tokens_per_step",
            self.tokens_per_step,
            self.micro_batch_size * self.block_size,
            world_size,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def whole_micro_batches(flag: str, size: int, per_micro_batch: int, world_size: int) -> int:
    """`size` (a step in tokens or pairs; 0 = one micro-batch per process) in micro-batches of
    `per_micro_batch`, a whole number of them per process, or a UserError that suggests one."""
    if size == 0:
        return world_size
    per_round = per_micro_batch * world_size
    if size % per_round:
        nearest = max(per_round, round(size / per_round) * per_round)
        raise UserError(
            f"--{flag}={size} is not a multiple of a micro-batch x processes = "
            f"{per_micro_batch} x {world_size} = {per_round}; use e.g. "
            f"--{flag}={nearest}"
        )
    return size // per_micro_batch


def parse_config(default_config, argv: list[str], description: str | None = None):
    """A copy of `default_config` with the command line's values, checked (UserError if not);
    `--help` prints every field and exits."""
    fields = {f.name: f for f in dataclasses.fields(default_config)}
    hints = typing.get_type_hints(type(default_config))
    values, args = {}, list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(help_text(default_config, hints, description))
            sys.exit(0)
        if not arg.startswith("--") or arg == "--":
            raise UserError(f"unexpected argument {arg!r}; options look like --key=value")
        key, has_value, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
            raise UserError(f"unknown option --{key}{hint} (see --help for the list)")
        if not has_value and hints[key] is bool:  # --flag, --flag=false or --flag false
            value = args.pop(0) if args and args[0].lower() in BOOLEANS else "true"
        elif not has_value:
            if not args:
                raise UserError(f"--{key} needs a value (--{key}=VALUE)")
            value = args.pop(0)
        values[key] = parse_value(key, value, hints[key])
    config = dataclasses.replace(default_config, **values)
    config.check()
    return config


def parse_value(key: str, text: str, kind):
    optional = type(None) in typing.get_args(kind)
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    try:
        if base is bool:
            return BOOLEANS[text.strip().lower()]
        if base is int:
            number = float(text)  # 3.5e9 for a token budget, if it is a whole number
            if not number.is_integer():
                raise ValueError
            return int(text) if text.strip().lstrip("+-").isdigit() else int(number)
        if base is dict:
            return parse_mapping(text)
        return base(text)
    except (ValueError, KeyError, OverflowError):
        advice = " (use true or false)" if base is bool else ""
        raise UserError(f"--{key}={text!r} is not a valid {type_name(kind)}{advice}") from None


def parse_mapping(text: str) -> dict:
    """`{"n_layer": 4}` (JSON) or `n_layer=4,n_embd=256` (values read as JSON where they parse)."""
    if text.strip().startswith("{"):
        return json.loads(text)  # a JSONDecodeError is a ValueError
    result = {}
    for item in filter(None, text.strip().split(",")):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError
        try:
            result[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            result[name.strip()] = raw.strip()
    return result


def type_name(kind) -> str:
    return "str or none" if type(None) in typing.get_args(kind) else kind.__name__


def help_text(config, hints: dict, description: str | None) -> str:
    lines = [description.strip(), ""] if description else []
    lines.append("Options (--key=value; current value in brackets):")
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        extra = f" (one of: {', '.join(choices)})" if choices else ""
        lines.append(f"  --{f.name}: {type_name(hints[f.name])} [{getattr(config, f.name)!r}]")
        lines.append(f"      {f.metadata.get('help', '')}{extra}")
    return "\n".join(lines)
