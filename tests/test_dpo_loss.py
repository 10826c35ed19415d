"""DPO loss math: each loss type against an independent float64 computation, and log-prob sums."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from common.errors import UserError
from training.dpo_stage import (
    LOSS_TYPES,
    dpo_loss,
    preference_metrics,
    sequence_logps,
)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def reference_loss(pc, pr, rc, rr, beta, loss_type, eps):
    """Straight from the papers' formulas, one pair at a time, in float64."""
    z = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":  # DPO eq. 7; cDPO with eps > 0
        return -(1 - eps) * log_sigmoid(beta * z) - eps * log_sigmoid(-beta * z)
    if loss_type == "robust":  # Chowdhury et al. 2024, eq. 7 (TRL "robust")
        return (-(1 - eps) * log_sigmoid(beta * z) + eps * log_sigmoid(-beta * z)) / (1 - 2 * eps)
    if loss_type == "ipo":  # Azar et al. 2023, eq. 17
        return (z - 1 / (2 * beta)) ** 2
    raise AssertionError(loss_type)


@pytest.mark.parametrize(
    "loss_type,beta,eps",
    [
        ("sigmoid", 0.1, 0.0),
        ("sigmoid", 0.5, 0.2),  # conservative DPO
        ("robust", 0.1, 0.0),
        ("robust", 0.3, 0.1),
        ("ipo", 0.1, 0.0),
        ("ipo", 1.0, 0.0),
    ],
)
def test_loss_and_rewards_match_an_independent_computation(loss_type, beta, eps):
    generator = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (
        -50 * torch.rand(64, generator=generator, dtype=torch.float64) for _ in range(4)
    )
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta, loss_type, eps)
    expected = [
        reference_loss(*(t[i].item() for t in (pc, pr, rc, rr)), beta, loss_type, eps)
        for i in range(64)
    ]
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chosen_rewards.numpy(), (beta * (pc - rc)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(rejected_rewards.numpy(), (beta * (pr - rr)).numpy(), rtol=1e-12)

    metrics = preference_metrics(chosen_rewards, rejected_rewards, pc, pr)
    margins = (beta * ((pc - rc) - (pr - rr))).numpy()
    assert metrics["rewards/margins"].item() == pytest.approx(margins.sum())
    assert metrics["rewards/accuracies"].item() == (margins > 0).sum()
    assert metrics["logps/chosen"].item() == pytest.approx(pc.sum().item())
    assert metrics["logps/rejected"].item() == pytest.approx(pr.sum().item())


@pytest.mark.parametrize("beta", [0.01, 0.1, 2.0])
def test_sigmoid_loss_is_ln2_when_policy_equals_reference(beta):
    logps = -20 * torch.rand(2, 8)
    losses, chosen, rejected = dpo_loss(logps[0], logps[1], logps[0], logps[1], beta)
    torch.testing.assert_close(losses, torch.full((8,), math.log(2)))
    assert (chosen == 0).all() and (rejected == 0).all()


def test_gradient_pushes_chosen_up_and_rejected_down_and_skips_the_reference():
    pc, pr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    rc, rr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    for loss_type in LOSS_TYPES:
        pc.grad = pr.grad = None
        losses, _, _ = dpo_loss(pc, pr, rc, rr, 0.1, loss_type)
        losses.sum().backward()
        assert pc.grad.item() < 0 < pr.grad.item(), loss_type  # descent raises chosen
        assert rc.grad is None and rr.grad is None


def test_sequence_logps_sum_only_the_target_positions():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 11, generator=generator)
    targets = torch.tensor(
        [[-100, -100, 4, 7, 2, -100], [-100, 1, 1, 1, 1, 1], [-100, -100, -100, -100, -100, 9]]
    )
    sums, counts = sequence_logps(logits, targets)
    log_probs = logits.log_softmax(-1)
    for row in range(3):
        expected = sum(
            log_probs[row, t, targets[row, t]].item() for t in range(6) if targets[row, t] != -100
        )
        assert sums[row].item() == pytest.approx(expected, abs=1e-5)
    assert counts.tolist() == [3, 5, 1]
    # A change of logits at an ignored position changes nothing.
    logits[0, 0] += 100
    assert sequence_logps(logits, targets)[0][0].item() == pytest.approx(sums[0].item(), abs=1e-6)


@pytest.mark.parametrize(
    "loss_type,beta,eps",
    [("hinge", 0.1, 0.0), ("sigmoid", 0.0, 0.0), ("sigmoid", 0.1, 0.5), ("ipo", 0.1, 0.1)],
)
def test_bad_loss_settings_are_user_errors(loss_type, beta, eps):
    import post_training_dpo

    config = post_training_dpo.CONFIG
    config = dataclasses.replace(config, loss_type=loss_type, beta=beta, label_smoothing=eps)
    with pytest.raises(UserError):
        config.check()
