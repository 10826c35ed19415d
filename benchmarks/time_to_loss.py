r"""Time to quality: how many tokens (and seconds) each recipe needs to reach the validation loss
that the baseline recipe ends at, training the same model on the same data from the same seed.

    # CPU mode (about 13 minutes on 2 cores): the debug-size model on the sample corpus, 2M tokens
    OMP_NUM_THREADS=1 python3 -m benchmarks.time_to_loss
    # GPU mode (a few minutes per recipe; run by benchmarks/gpu_check.py): 124m, bf16, compiled
    python3 -m benchmarks.time_to_loss --mode gpu
    # your corpus (any tokenized pre-training folder and its tokenizer), preset and budget
    python3 -m benchmarks.time_to_loss --data-dir data/pre_training/tokenized \
        --tokenizer-path data/tokenizer/tokenizer.json --preset 15m --block-size 256 \
        --micro-batch-size 32 --tokens-per-step 65536 --max-tokens 50e6
    # your own candidates: a recipe name, optionally with :key=value,... changes
    python3 -m benchmarks.time_to_loss --recipes baseline default default:muon_lr=0.04,warmup=0.02

Every run goes through the real engine (training.trainer.train with the pre-training stage) with
evaluations at --evals equally spaced token counts. Recipes (the optimizer and schedule fields
of TrainConfig; warm-ups are fractions of the run, so they scale with the budget):
- `baseline`: the recipe before Muon (pre_training.py's CONFIG until issue 10): AdamW at 6e-4,
  betas (0.9, 0.95), weight decay 0.1, cosine to 6e-5, warm-up 300 of 6,700 steps;
- `adamw_tuned`: the same with the learning rate that measured best on the CPU benchmark, so
  the reader sees how much of a gain is Muon's and how much the learning rate's;
- `default`: whatever pre_training.py's CONFIG holds now: since issue 10 the Muon recipe
  (benchmarks/README.md has the measurements that chose it).
Printed: validation loss at every evaluation for each recipe (mean over --seeds), then for each
candidate the tokens and training seconds (evaluations excluded) it needed to first reach the
baseline's final validation loss (interpolated between evaluations), and their ratio to the
baseline's, then each recipe's benchmark scores at its end (--eval-tasks: on the sample corpus,
the sample world's multiple-choice test). One JSON line per recipe closes the output
(benchmarks/gpu_check.py reads them).
Without --data-dir the sample corpus is generated, its tokenizer trained and the data tokenized
under data/time_to_loss/ (kept for the next run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import pre_training
from common.errors import ArgumentParser, UserError, run_cli
from training.config import TrainConfig, parse_config
from training.pretraining_stage import PretrainingStage
from training.task_scores import summary as task_summary
from training.trainer import train

REPO = Path(__file__).resolve().parent.parent

# pre_training.py's CONFIG before issue 10: 300 warm-up steps of 6,700.
BASELINE = dict(
    optimizer="adamw",
    learning_rate=6e-4,
    min_lr=6e-5,
    schedule="cosine",
    warmup=300 / 6700,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
)
RECIPES = {
    "baseline": BASELINE,
    # AdamW at the learning rate and schedule that measured best for the CPU mode's model
    "adamw_tuned": BASELINE | dict(learning_rate=1.2e-2, min_lr=1.2e-3, schedule="wsd"),
}
# The run-length-relative fields of a recipe -> the TrainConfig step counts they set.
FRACTIONS = {"warmup": "warmup_steps", "momentum_warmup": "muon_momentum_warmup"}
RECIPE_FIELDS = (
    "optimizer",
    "learning_rate",
    "min_lr",
    "schedule",
    "decay_fraction",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "muon_lr",
    "embedding_lr",
    "head_lr",
    "muon_momentum",
    "muon_momentum_start",
    "muon_weight_decay",
    "muon_ns_steps",
)

MODES = {
    # The sample corpus at 20 MB is 4.5M training tokens: 2M tokens see each window < once.
    "cpu": dict(
        preset="debug",
        block_size=256,
        micro_batch_size=16,
        tokens_per_step=8192,
        max_tokens=2_000_000,
        sample_mb=20,
        device="cpu",
        precision="fp32",
        compile=False,
        recipes=["baseline", "adamw_tuned", "default"],
    ),
    # 124m on an H100/H200: 32 x 1024 per forward, 2 micro-batches per step, 200 steps (13M
    # tokens of a 9M-token corpus), about 100 s per recipe with compilation.
    "gpu": dict(
        preset="124m",
        block_size=1024,
        micro_batch_size=32,
        tokens_per_step=65536,
        max_tokens=13_107_200,
        sample_mb=40,
        device="cuda",
        precision="bf16",
        compile=True,
        recipes=["baseline", "default"],
    ),
}


def default_recipe() -> dict:
    """pre_training.py's CONFIG as a recipe (its warm-ups as fractions of its max_steps)."""
    config = pre_training.CONFIG
    recipe = {name: getattr(config, name) for name in RECIPE_FIELDS}
    recipe["warmup"] = config.warmup_steps / config.max_steps
    recipe["momentum_warmup"] = config.muon_momentum_warmup / config.max_steps
    return recipe


def parse_recipe(spec: str) -> dict:
    """`name` or `name:key=value,key=value` -> the recipe dict (values checked later)."""
    name, _, changes = spec.partition(":")
    if name == "default":
        recipe = default_recipe()
    elif name in RECIPES:
        recipe = dict(RECIPES[name])
    else:
        raise UserError(f"unknown recipe {name!r}; one of {', '.join([*RECIPES, 'default'])}")
    for change in filter(None, changes.split(",")):
        key, sep, value = change.partition("=")
        if not sep:
            raise UserError(f"recipe {spec!r}: {change!r} is not key=value")
        recipe[key.strip()] = value.strip()
    return recipe


def run_config(args, recipe: dict, run_name: str, seed: int) -> TrainConfig:
    """The TrainConfig of one run: the benchmark's model, data and budget + the recipe."""
    steps = -(-int(args.max_tokens) // args.tokens_per_step)
    interval = max(1, steps // args.evals)
    base = dataclasses.replace(
        pre_training.CONFIG,
        run_name=run_name,
        checkpoint_dir=str(args.out_dir),
        data_dir=str(args.data_dir),
        tokenizer_path=str(args.tokenizer_path),
        model_preset=args.preset,
        block_size=args.block_size,
        micro_batch_size=args.micro_batch_size,
        tokens_per_step=args.tokens_per_step,
        max_steps=steps,
        max_tokens=0,
        precision=args.precision,
        compile=args.compile,
        device=args.device,
        seed=seed,
        eval_interval=interval,
        eval_batches=args.eval_batches,
        log_interval=1,
        checkpoint_interval=steps,
        keep_last=1,
        sample_max_new_tokens=0,
        overwrite=True,
        eval_tasks=args.eval_tasks or "",
        eval_tasks_interval=steps,
        eval_tasks_limit=args.eval_tasks_limit,
        eval_data_dir=args.eval_data_dir,
    )
    flags = [f"--model_overrides={args.model_overrides}"]
    for key, value in recipe.items():
        if key in FRACTIONS:
            try:
                fraction = float(value)
            except ValueError:
                message = f"recipe: {key}={value!r} is a fraction of the run, e.g. 0.1"
                raise UserError(message) from None
            flags.append(f"--{FRACTIONS[key]}={round(fraction * steps)}")
        else:
            flags.append(f"--{key}={value}")
    return parse_config(base, flags)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def run_recipe(args, label: str, recipe: dict, seed: int) -> dict:
    """Train one recipe; its validation curve and cumulative training seconds per step."""
    run_name = f"{label.replace(':', '_').replace(',', '_').replace('=', '')}_seed{seed}"
    config = run_config(args, recipe, run_name, seed)
    print(f"== {label} (seed {seed}): {config.max_steps} steps", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = train(config, PretrainingStage)
    wall = time.perf_counter() - started
    torch.compiler.reset()  # the next run's model compiles afresh (no stale graphs, no limit)
    if result.stopped_by_signal:
        raise KeyboardInterrupt
    tokens_per_step = config.tokens_per_step
    # log_interval=1: perf/tokens_per_s of step s is that step's tokens over its own seconds
    seconds = np.cumsum(
        [tokens_per_step / v for _, v in scalars(result.run_dir, "perf/tokens_per_s")]
    )
    validation = scalars(result.run_dir, "val/loss")
    return {
        "tokens": [step * tokens_per_step for step, _ in validation],
        "val_loss": [value for _, value in validation],
        "seconds": [float(seconds[step - 1]) for step, _ in validation],
        "wall_s": wall,
        "task_scores": result.task_scores,  # eval_tasks at the last step
    }


def first_reach(tokens, losses, seconds, target: float) -> tuple[float, float] | None:
    """(tokens, seconds) at which the curve first gets to `target`, linearly interpolated."""
    previous = (0.0, float("inf"), 0.0)
    for point in zip(tokens, losses, seconds):
        if point[1] <= target:
            (t0, l0, s0), (t1, l1, s1) = previous, point
            share = 1.0 if not np.isfinite(l0) else (l0 - target) / (l0 - l1)
            return t0 + share * (t1 - t0), s0 + share * (s1 - s0)
        previous = point
    return None


def summarize(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean curve over seeds per recipe, and each one's tokens/seconds to the baseline's end."""
    curves = {}
    for label, runs in results.items():
        curves[label] = {
            "tokens": runs[0]["tokens"],
            "val_loss": list(np.mean([r["val_loss"] for r in runs], axis=0)),
            "seconds": list(np.mean([r["seconds"] for r in runs], axis=0)),
            "task_scores": {
                name: float(np.mean([r["task_scores"][name] for r in runs]))
                for name in runs[0].get("task_scores", {})
            },
        }
    baseline = curves[next(iter(curves))]
    target = baseline["val_loss"][-1]
    total_tokens, total_seconds = baseline["tokens"][-1], baseline["seconds"][-1]
    for curve in curves.values():
        reached = first_reach(curve["tokens"], curve["val_loss"], curve["seconds"], target)
        curve["target"] = target
        curve["final_val_loss"] = curve["val_loss"][-1]
        if reached:
            curve["tokens_to_target"], curve["seconds_to_target"] = reached
            curve["token_ratio"] = reached[0] / total_tokens
            curve["seconds_ratio"] = reached[1] / total_seconds
            # below the target at the first evaluation: when it got there is not measured,
            # only that it took at most that long
            curve["at_most"] = bool(curve["val_loss"][0] <= target)
    return curves


def print_report(curves: dict[str, dict]) -> None:
    labels = list(curves)
    width = max(12, *(len(label) for label in labels))
    print("\nvalidation loss at equal tokens (mean over seeds)")
    print(f"{'tokens':>12s} " + " ".join(f"{label:>{width}s}" for label in labels))
    for i, tokens in enumerate(curves[labels[0]]["tokens"]):
        row = " ".join(f"{curves[label]['val_loss'][i]:>{width}.4f}" for label in labels)
        print(f"{tokens:>12,d} {row}")
    baseline = curves[labels[0]]
    print(f"\nto reach {labels[0]}'s final validation loss {baseline['target']:.4f}:")
    for label in labels:
        curve = curves[label]
        if "tokens_to_target" not in curve:
            print(f"  {label:{width}s} not reached (final {curve['final_val_loss']:.4f})")
            continue
        bound = "<=" if curve["at_most"] else "  "  # by the first evaluation: an upper bound
        print(
            f"  {label:{width}s} {bound}{curve['tokens_to_target']:>12,.0f} tokens "
            f"({bound}{curve['token_ratio']:.2f}x), {curve['seconds_to_target']:8.1f} s of "
            f"training ({curve['seconds_ratio']:.2f}x); final {curve['final_val_loss']:.4f}"
        )
    if any(curves[label]["task_scores"] for label in labels):
        print("\nbenchmark scores at the end of each run (--eval-tasks, mean over seeds):")
        for label in labels:
            print(f"  {label:{width}s} {task_summary(curves[label]['task_scores']) or 'none'}")
    for label in labels:
        print(json.dumps({"recipe": label, **curves[label]}))


def build_sample_data(megabytes: float) -> tuple[Path, Path]:
    """The sample corpus of about `megabytes`, a 2,048-token tokenizer, the tokenized data."""
    root = REPO / "data" / "time_to_loss" / f"sample_{megabytes:g}mb"
    raw, tokenizer, tokenized = root / "raw", root / "tokenizer.json", root / "tokenized"
    if (tokenized / "validation" / "meta.json").exists() and tokenizer.exists():
        return tokenized, tokenizer
    from dataset.pre_training import download_dataset  # (needs HF datasets: only when building)
    from tokenizer import tokenize_dataset
    from tokenizer import train as tokenizer_train

    download_dataset.main(
        [
            "--source",
            "sample",
            "--output-dir",
            str(raw),
            "--overwrite",
            "--sample-size-mb",
            str(megabytes),
        ]
    )
    tokenizer_train.main(
        [
            "--dataset-dir",
            str(raw),
            "--output-path",
            str(tokenizer),
            "--vocab-size",
            "2048",
            "--overwrite",
        ]
    )
    tokenize_dataset.main(
        [
            "--dataset-dir",
            str(raw),
            "--tokenizer-path",
            str(tokenizer),
            "--output-dir",
            str(tokenized),
            "--overwrite",
        ]
    )
    return tokenized, tokenizer


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python3 -m benchmarks.time_to_loss",
        description="Tokens and seconds each recipe needs to reach the baseline's final "
        "validation loss (same model, data, seed and token budget).",
    )
    parser.add_argument(
        "--mode",
        choices=sorted(MODES),
        default="cpu",
        help="defaults for every option below: cpu (debug model, sample corpus, "
        "2M tokens) or gpu (124m, bf16, compiled, ~13M tokens)",
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        help="the first is the baseline; name or name:key=value,... (names: "
        f"{', '.join([*RECIPES, 'default'])})",
    )
    parser.add_argument(
        "--data-dir",
        help="tokenized pre-training folder (default: build the "
        "sample corpus under data/time_to_loss/)",
    )
    parser.add_argument("--tokenizer-path", help="its tokenizer.json (with --data-dir)")
    parser.add_argument("--sample-mb", type=float, help="size of the sample corpus to build")
    parser.add_argument("--preset", help="model preset (model/config.py)")
    parser.add_argument("--model-overrides", default="", help="e.g. n_layer=4,n_embd=192")
    parser.add_argument("--block-size", type=int, help="tokens per sequence")
    parser.add_argument("--micro-batch-size", type=int, help="sequences per forward pass")
    parser.add_argument("--tokens-per-step", type=int, help="tokens per optimizer step")
    parser.add_argument("--max-tokens", type=float, help="token budget of every run")
    parser.add_argument("--evals", type=int, default=16, help="evaluations per run")
    parser.add_argument("--eval-batches", type=int, default=8, help="micro-batches per eval")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337], help="one run each")
    parser.add_argument("--device", help="cpu, cuda, ...")
    parser.add_argument("--precision", help="fp32, bf16, ...")
    parser.add_argument("--compile", choices=("on", "off"), help="torch.compile the model")
    parser.add_argument(
        "--eval-tasks",
        help="benchmark tasks scored at the end of each run, "
        "beside val loss (default: sample_world on the sample corpus, none "
        "with --data-dir; core needs the evaluation data step)",
    )
    parser.add_argument(
        "--eval-tasks-limit",
        type=int,
        default=0,
        help="examples per task (0: all; the sample world has 280)",
    )
    parser.add_argument(
        "--eval-data-dir",
        default="data/evaluation",
        help="the tasks' copies (dataset.evaluation.download_dataset)",
    )
    parser.add_argument("--out-dir", default="checkpoints/time_to_loss", help="run folders")
    parser.add_argument("--json", help="also write the summary to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in MODES[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.compile = args.compile in (True, "on")
    if (args.data_dir is None) != (args.tokenizer_path is None):
        raise UserError("give --data-dir and --tokenizer-path together (or neither)")
    if args.eval_tasks is None:  # the sample world's test fits only the sample corpus
        args.eval_tasks = "sample_world" if args.data_dir is None else ""
    if args.data_dir is None:
        args.data_dir, args.tokenizer_path = build_sample_data(args.sample_mb)
    if args.evals < 1 or args.max_tokens < args.tokens_per_step:
        raise UserError("--evals must be >= 1 and --max-tokens at least one step's tokens")
    recipes = {spec: parse_recipe(spec) for spec in args.recipes}
    for recipe in recipes.values():  # a bad setting is an error now, not after hours of runs
        run_config(args, recipe, "check", args.seeds[0])
    results: dict[str, list[dict]] = {label: [] for label in recipes}
    for seed in args.seeds:
        for label, recipe in recipes.items():
            results[label].append(run_recipe(args, label, recipe, seed))
    curves = summarize(results)
    print_report(curves)
    if args.json:
        Path(args.json).write_text(json.dumps(curves, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
