"""What DPO does on the sample preference pairs, against the SFT model and an NLL-only control.

    python3 benchmarks/dpo_sample_benchmark.py                  # about 8 minutes on one CPU core
    python3 benchmarks/dpo_sample_benchmark.py --variants dpo_rpo

Builds the pipeline of tests/test_dpo_sample_pipeline.py (sample world -> tokenizer -> pre-train
-> SFT, a 0.4M-parameter model; 2,000 preference pairs), then trains each variant from the same
SFT checkpoint and prints one JSON line per variant:
- `reward_accuracy`: share of held-out pairs (100 requests no training pair shows) whose chosen
  reply gains more log-probability over the SFT model than the rejected one, overall and per
  kind of rejected answer;
- `name_home_within_limit`: share of answers sampled at temperature 0.7 (2 per held-out request,
  seeded) that name the requested hero and home within the sentence limit, the checks the
  pairs teach;
- `within_sentence_limit`: share of answers (3 per held-out request that sets a limit, up to 250
  new tokens) that keep to it.
The variants differ in one setting each:
- `dpo_rpo`: the test's run, DPO plus the chosen reply's NLL (`--rpo_alpha=1.0`);
- `nll_only`: the same with beta = 1e-4, which leaves the NLL term alone: continued SFT on the
  chosen replies, the control for what the preference itself adds;
- `dpo`: plain DPO (`--rpo_alpha=0`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the pipeline builder lives with the tests

import datasets  # noqa: E402
import post_training_fixtures as pipeline  # noqa: E402

from common.errors import ArgumentParser, run_cli  # noqa: E402
from dataset.sample_world.check import count_sentences, violations  # noqa: E402

VARIANTS = {
    "dpo_rpo": (),
    "nll_only": ("--beta=0.0001",),
    "dpo": ("--rpo_alpha=0.0",),
}


def rejected_kinds(raw_split: Path) -> list[str]:
    """The kind of each pair's rejected answer, read back from what the checker finds."""
    kinds = []
    for row in datasets.load_from_disk(str(raw_split)):
        problems = violations(row["constraints"], row["rejected"][0]["content"])
        include = json.loads(row["constraints"])["include"]
        missing = [i for i, word in enumerate(include) if f"missing {word!r}" in problems]
        if len(missing) >= 3:
            kinds.append("other_request")
        elif missing:
            kinds.append({0: "wrong_name", 2: "wrong_place"}.get(missing[0], "other"))
        else:
            kinds.append("too_long")
    return kinds


def reward_accuracy(checkpoint: Path) -> dict:
    run = pipeline.sample_pipeline()
    split = run.tokenized["dpo"] / "test"
    rewards = pipeline.pair_logps(checkpoint, split) - pipeline.pair_logps(
        pipeline.sft_checkpoint(), split
    )  # [pairs, (chosen, rejected)]
    accurate = rewards[:, 0] > rewards[:, 1]
    kinds = np.array(rejected_kinds(run.raw["dpo"] / "test"))
    assert len(kinds) == len(accurate), "a held-out pair was dropped by tokenization"
    by_kind = {kind: round(float(accurate[kinds == kind].mean()), 2) for kind in sorted(set(kinds))}
    return {"all": round(float(accurate.mean()), 2), **by_kind}


def within_limit(checkpoint: Path, prompts) -> float:
    limited = [(m, c) for m, c in prompts if "max_sentences" in json.loads(c)]
    _, answers = pipeline.following_rate(
        checkpoint, limited, max_new_tokens=250, temperature=0.7, samples=3
    )
    limits = [json.loads(c)["max_sentences"] for _, c in limited for _ in range(3)]
    return float(np.mean([count_sentences(a) <= n for a, n in zip(answers, limits)]))


def measure(name: str, checkpoint: Path, prompts) -> dict:
    taught, _ = pipeline.following_rate(
        checkpoint, pipeline.taught_checks(prompts), temperature=0.7, samples=2
    )
    record = {"model": name}
    if name != "sft":
        record["reward_accuracy"] = reward_accuracy(checkpoint)
    record["name_home_within_limit"] = round(taught, 2)
    record["within_sentence_limit"] = round(within_limit(checkpoint, prompts), 2)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="runs"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    prompts = pipeline.held_out_dpo_prompts(100)
    records = [measure("sft", pipeline.sft_checkpoint(), prompts)]
    print(json.dumps(records[-1]), flush=True)
    for variant in args.variants:
        records.append(measure(variant, pipeline.dpo_checkpoint(*VARIANTS[variant]), prompts))
        print(json.dumps(records[-1]), flush=True)


if __name__ == "__main__":
    run_cli(main)
