"""Muon or AdamW for SFT and DPO: the sample world's instruction-following checks after each.

    OMP_NUM_THREADS=1 python3 benchmarks/post_training_optimizer.py     # about 10 minutes, 1 core
    OMP_NUM_THREADS=1 python3 benchmarks/post_training_optimizer.py --arms adamw muon --seeds 1 2

The pipeline of tests/test_sft_sample_pipeline.py and tests/test_dpo_sample_pipeline.py (sample
world -> tokenizer -> pre-train 200 steps -> SFT 300 steps -> DPO 200 steps, a 0.4M-parameter
model, the tests' flags), once per arm; each arm names the optimizer of each stage:
- `adamw`:      AdamW, AdamW, AdamW (the tests' pipeline before issue 10);
- `muon_pre`:   Muon pre-training, then AdamW SFT and DPO;
- `muon`:       Muon for all three.
Muon runs use the recommended recipe (pre_training.py's CONFIG), its learning rates
scaled by the stage's AdamW rate over pre-training's (SFT: x1, as the tests' AdamW rates;
DPO: x0.1); Muon pre-training also takes the recipe's schedule, as pre_training.py would
once its CONFIG holds the recipe. Printed, one JSON line per arm, the figures the tests assert on:
- `sft_name_place`: greedy answers to 30 held-out story instructions that name the requested
  name and place (`sft_strict`: that meet every constraint), before (the pre-trained model) and
  after SFT;
- `dpo_reward_accuracy`: held-out pairs whose chosen reply gains more log-probability over the
  SFT model than the rejected one;
- `sft_taught` / `dpo_taught`: answers sampled at temperature 0.7 (2 per held-out DPO request)
  that name the requested hero and home within the sentence limit, after SFT and after DPO.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the pipeline builder lives with the tests

import post_training_fixtures as pipeline  # noqa: E402

from benchmarks.time_to_loss import default_recipe  # noqa: E402
from common.errors import ArgumentParser, run_cli  # noqa: E402

ARMS = {
    "adamw": ("adamw", "adamw", "adamw"),
    "muon_pre": ("muon", "adamw", "adamw"),
    "muon": ("muon", "muon", "muon"),
}
LR_SCALE = {"pre": 1.0, "sft": 1.0, "dpo": 0.1}  # the tests' AdamW rates: 3e-3, 3e-3, 3e-4


def optimizer_flags(optimizer: str, stage: str, steps: int) -> list[str]:
    """--optimizer and, for Muon, the recommended recipe's rates scaled for the stage."""
    if optimizer == "adamw":
        return ["--optimizer=adamw"]
    recipe, scale = default_recipe(), LR_SCALE[stage]
    flags = [
        "--optimizer=muon",
        f"--muon_momentum_warmup={round(recipe['momentum_warmup'] * steps)}",
    ]
    for name in ("muon_lr", "embedding_lr", "head_lr"):
        flags.append(f"--{name}={recipe[name] * scale:g}")
    for name in ("muon_momentum", "muon_weight_decay"):
        flags.append(f"--{name}={recipe[name]}")
    if stage == "pre":  # the recommended schedule comes with it (the tests' flags leave it)
        flags += [
            f"--schedule={recipe['schedule']}",
            f"--decay_fraction={recipe['decay_fraction']}",
        ]
    return flags


def name_and_place(checkpoint: Path, prompts) -> tuple[float, float]:
    strict, answers = pipeline.following_rate(checkpoint, prompts)
    named = [pipeline.satisfies_subset(c, a, (0, 2)) for (_, c), a in zip(prompts, answers)]
    return float(np.mean(named)), strict


def reward_accuracy(policy: Path, reference: Path) -> float:
    split = pipeline.sample_pipeline().tokenized["dpo"] / "test"
    rewards = pipeline.pair_logps(policy, split) - pipeline.pair_logps(reference, split)
    return float(np.mean(rewards[:, 0] > rewards[:, 1]))  # [pairs, (chosen, rejected)]


def measure(arm: str, seed: int) -> dict:
    pre_opt, sft_opt, dpo_opt = ARMS[arm]
    seeded = [f"--seed={seed}"]
    pre_flags = optimizer_flags(pre_opt, "pre", pipeline.PRETRAIN_STEPS) + seeded
    pre = pipeline.pretrained_checkpoint(*pre_flags)
    sft_flags = optimizer_flags(sft_opt, "sft", pipeline.SFT_STEPS) + seeded
    sft = pipeline.sft_checkpoint(*sft_flags, init=pre)
    dpo_flags = optimizer_flags(dpo_opt, "dpo", pipeline.DPO_STEPS) + seeded
    dpo = pipeline.dpo_checkpoint(*dpo_flags, init=sft)
    stories = [p for p in pipeline.held_out_sft_prompts(100) if '"task": "story"' in p[1]][:30]
    requests = pipeline.taught_checks(pipeline.held_out_dpo_prompts(100))
    sampled = dict(temperature=0.7, samples=2)
    before, before_strict = name_and_place(pre, stories)
    after, after_strict = name_and_place(sft, stories)
    return {
        "arm": arm,
        "seed": seed,
        "optimizers": dict(zip(("pre", "sft", "dpo"), ARMS[arm])),
        "sft_name_place": [round(before, 2), round(after, 2)],
        "sft_strict": [round(before_strict, 2), round(after_strict, 2)],
        "dpo_reward_accuracy": round(reward_accuracy(dpo, sft), 2),
        "sft_taught": round(pipeline.following_rate(sft, requests, **sampled)[0], 2),
        "dpo_taught": round(pipeline.following_rate(dpo, requests, **sampled)[0], 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1337], help="training seeds of every stage"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for seed in args.seeds:
        for arm in args.arms:
            print(json.dumps(measure(arm, seed)), flush=True)


if __name__ == "__main__":
    run_cli(main)
