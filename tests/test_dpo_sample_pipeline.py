"""DPO on the real sample pairs: the policy learns the preferences it is shown.

Same cached pipeline as test_sft_sample_pipeline.py, then post_training_dpo.py on the sample
preference pairs (the chosen answer meets the instruction, the rejected one is the same answer
with one thing broken: another name, animal, place, object or feeling, too many sentences, a
wrong fact).

What is asserted, on the pairs DPO trained on (about one epoch):
- reward accuracy, beta * (log pi - log ref) larger for the chosen reply: 0 for every pair
  before DPO (policy == reference, all rewards 0), well above chance after;
- the policy's own preference, log pi(chosen) > log pi(rejected), rises over the SFT model's.
A sign error, chosen/rejected swapped in the batch, a reference that moves with the policy or
log-probs summed over the wrong tokens all break these.

What is only printed: the same figures on the held-out test split (instructions no training
step shows) and the share of generated answers that the sample world's checker accepts. At
this CPU-test scale (0.4M parameters, a minute of training) DPO does not generalise to new
instructions: held-out reward accuracy stays near chance and the answers do not improve; that
needs a larger model and more data than a unit test can afford.
"""

import numpy as np
from post_training_fixtures import (
    dpo_checkpoint,
    following_rate,
    held_out_dpo_prompts,
    pair_logps,
    sample_pipeline,
    sft_checkpoint,
)


def preference_figures(split_dir) -> tuple[float, float, float]:
    """(reward accuracy, SFT's log-prob preference, DPO's log-prob preference) on a split."""
    reference = pair_logps(sft_checkpoint(), split_dir)  # [pairs, (chosen, rejected)]
    policy = pair_logps(dpo_checkpoint(), split_dir)
    rewards = policy - reference
    return (
        float(np.mean(rewards[:, 0] > rewards[:, 1])),
        float(np.mean(reference[:, 0] > reference[:, 1])),
        float(np.mean(policy[:, 0] > policy[:, 1])),
    )


def test_dpo_learns_the_preferences_it_is_shown():
    tokenized = sample_pipeline().tokenized["dpo"]
    train_accuracy, train_sft, train_dpo = preference_figures(tokenized / "train")
    test_accuracy, test_sft, test_dpo = preference_figures(tokenized / "test")
    prompts = held_out_dpo_prompts(50)
    sft_rate, _ = following_rate(sft_checkpoint(), prompts)
    dpo_rate, _ = following_rate(dpo_checkpoint(), prompts)
    print(
        f"train pairs: reward accuracy 0.00 -> {train_accuracy:.2f}, log pi(chosen) > "
        f"log pi(rejected) {train_sft:.2f} -> {train_dpo:.2f}; held-out pairs: reward accuracy "
        f"0.00 -> {test_accuracy:.2f}, preference {test_sft:.2f} -> {test_dpo:.2f}; held-out "
        f"answers meeting every constraint {sft_rate:.2f} -> {dpo_rate:.2f} ({len(prompts)})"
    )
    assert train_accuracy >= 0.7
    assert train_dpo >= train_sft + 0.03
