"""DPO on the real sample pairs: the policy learns the preferences and they carry to new requests.

Same cached pipeline as test_sft_sample_pipeline.py (0.4M parameters), then post_training_dpo.py
with --rpo_alpha=1.0 on 2,000 sample preference pairs (dataset/sample_world/preferences.py: the
chosen story meets the request; the rejected one has the wrong name or home, is written for
another request, or runs past the sentence limit). The held-out test split asks for name,
animal and place combinations that no training pair shows.

Asserted:
- reward accuracy, beta * (log pi - log ref) larger for the chosen reply, is 0 for every pair
  before DPO (policy == reference) and well above chance after, on 500 of the training pairs
  and on the held-out pairs;
- answers sampled at temperature 0.7 to held-out requests name the requested hero and home,
  within the sentence limit, more often than the SFT model's answers do.
A sign error, chosen/rejected swapped in the batch, a reference that moves with the policy or
log-probs summed over the wrong tokens all break the first; a DPO that only memorises its
pairs, or that lowers every log-prob and so ruins the answers, breaks the second.
benchmarks/dpo_sample_benchmark.py runs the same pipeline against plain DPO and an NLL-only
control (which part of each gain the preference brings: benchmarks/README.md).
"""

import numpy as np
from post_training_fixtures import (
    dpo_checkpoint,
    following_rate,
    held_out_dpo_prompts,
    pair_logps,
    sample_pipeline,
    sft_checkpoint,
    taught_checks,
)

from dataset.sample_world.check import satisfies


def preference_figures(split_dir, limit=None) -> tuple[float, float, float]:
    """(reward accuracy, SFT's log-prob preference, DPO's log-prob preference) on a split's
    first `limit` pairs."""
    reference = pair_logps(sft_checkpoint(), split_dir, limit)  # [pairs, (chosen, rejected)]
    policy = pair_logps(dpo_checkpoint(), split_dir, limit)
    rewards = policy - reference
    return (
        float(np.mean(rewards[:, 0] > rewards[:, 1])),
        float(np.mean(reference[:, 0] > reference[:, 1])),
        float(np.mean(policy[:, 0] > policy[:, 1])),
    )


def test_dpo_learns_preferences_that_carry_to_held_out_requests():
    tokenized = sample_pipeline().tokenized["dpo"]
    # 500 of the 2,000 training pairs: the standard error of an accuracy near 0.9 is 0.013
    train_accuracy, train_sft, train_dpo = preference_figures(tokenized / "train", limit=500)
    test_accuracy, test_sft, test_dpo = preference_figures(tokenized / "test")
    prompts = held_out_dpo_prompts(100)
    sampled = dict(temperature=0.7, samples=2)
    sft_rate, sft_answers = following_rate(sft_checkpoint(), taught_checks(prompts), **sampled)
    dpo_rate, answers = following_rate(dpo_checkpoint(), taught_checks(prompts), **sampled)
    every = [constraints for _, constraints in prompts for _ in range(sampled["samples"])]
    sft_strict = np.mean([satisfies(c, a) for c, a in zip(every, sft_answers)])
    dpo_strict = np.mean([satisfies(c, a) for c, a in zip(every, answers)])
    print(
        f"reward accuracy: train pairs 0.00 -> {train_accuracy:.2f}, held-out pairs 0.00 -> "
        f"{test_accuracy:.2f}; log pi(chosen) > log pi(rejected): train {train_sft:.2f} -> "
        f"{train_dpo:.2f}, held-out {test_sft:.2f} -> {test_dpo:.2f}; sampled answers to "
        f"{len(prompts)} held-out requests naming hero and home within the limit: "
        f"{sft_rate:.2f} -> {dpo_rate:.2f}, meeting every constraint {sft_strict:.2f} -> "
        f"{dpo_strict:.2f}; e.g. {answers[0]!r}"
    )
    assert train_accuracy >= 0.8
    assert test_accuracy >= 0.75
    assert dpo_rate >= sft_rate + 0.08
