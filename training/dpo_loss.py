"""DPO losses on sequence log-probabilities, and the metrics TensorBoard shows for them.

Direct Preference Optimization (Rafailov et al., 2023) trains a policy pi so that, relative to a
frozen reference model, it raises the chosen reply's likelihood more than the rejected one's.
With per-pair sequence log-probs (summed over the reply tokens only):

    z = (log pi(chosen) - log pi(rejected)) - (log ref(chosen) - log ref(rejected))

| loss_type | per-pair loss                                      | from                         |
|-----------|----------------------------------------------------|------------------------------|
| sigmoid   | -(1-e) log s(beta z) - e log s(-beta z)            | DPO eq. 7; e > 0: cDPO       |
| robust    | (-(1-e) log s(beta z) + e log s(-beta z)) / (1-2e) | Chowdhury et al. 2024, eq. 7 |
| ipo       | (z - 1/(2 beta))^2 on length-averaged log-probs    | Azar et al. 2023, eq. 17     |

s is the logistic sigmoid, e the label smoothing (the assumed probability that a pair's label is
flipped); sigmoid with e > 0 is conservative DPO (cDPO, Mitchell 2023). Names and formulas
follow TRL's `DPOTrainer` (loss_type "sigmoid" | "robust" | "ipo", `label_smoothing`), so
numbers compare with runs made there. IPO, as in TRL, uses log-probs averaged over the reply's
tokens. With policy == reference, z = 0 and the sigmoid loss is ln 2 whatever beta is.

`preference_loss` is the whole loss of a batch, as the DPO stage calls it: log-probs averaged
per token where the loss type asks for it, the per-pair loss, the RPO term (`rpo_alpha` times
the chosen reply's mean per-token NLL, Pang et al. 2024) and the metrics. A new variant is one
per-pair function and one entry in LOSSES.

The implicit rewards are `beta * (log pi(y) - log ref(y))`; a pair counts as "accurate" when the
chosen reply's reward is strictly larger than the rejected one's.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.errors import UserError
from training.losses import IGNORE_INDEX, token_log_probs


def sigmoid_loss(z: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(beta * z) - label_smoothing * F.logsigmoid(
        -beta * z
    )


def robust_loss(z: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return (
        -(1 - label_smoothing) * F.logsigmoid(beta * z) + label_smoothing * F.logsigmoid(-beta * z)
    ) / (1 - 2 * label_smoothing)


def ipo_loss(z: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    del label_smoothing  # not defined for IPO (check_loss_settings refuses it)
    return (z - 1 / (2 * beta)) ** 2


@dataclass(frozen=True)
class LossType:
    per_pair: Callable[[torch.Tensor, float, float], torch.Tensor]  # (z, beta, eps) -> [B]
    per_token_average: bool  # work on log-probs averaged over each reply's tokens (IPO)


LOSSES = {
    "sigmoid": LossType(sigmoid_loss, per_token_average=False),
    "robust": LossType(robust_loss, per_token_average=False),
    "ipo": LossType(ipo_loss, per_token_average=True),
}
LOSS_TYPES = tuple(LOSSES)


def check_loss_settings(loss_type: str, beta: float, label_smoothing: float) -> None:
    """UserError for a loss configuration that cannot work (checked before any training)."""
    if loss_type not in LOSS_TYPES:
        raise UserError(
            f"--loss_type={loss_type!r} is unknown; choose one of {', '.join(LOSS_TYPES)}"
        )
    if not beta > 0:
        raise UserError(f"--beta={beta} must be positive (0.1 is the usual value)")
    if not 0 <= label_smoothing < 0.5:
        raise UserError(
            f"--label_smoothing={label_smoothing} must be in [0, 0.5): it is the assumed chance "
            "that a preference label is wrong"
        )
    if loss_type == "ipo" and label_smoothing:
        raise UserError("--label_smoothing applies to the sigmoid and robust losses, not to ipo")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and implicit rewards on the log-probs given; every input is [B].

    Returns (losses [B], chosen_rewards [B], rejected_rewards [B]). Rewards are detached: they
    are for logging, the gradient flows through `losses` into the policy log-probs only.
    """
    if loss_type not in LOSSES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {LOSS_TYPES}")
    policy_margin = policy_chosen_logps - policy_rejected_logps
    reference_margin = reference_chosen_logps - reference_rejected_logps
    z = policy_margin - reference_margin.detach()  # the reference never gets gradients
    losses = LOSSES[loss_type].per_pair(z, beta, label_smoothing)
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


def preference_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    counts: torch.Tensor,
    loss_type: str,
    beta: float,
    label_smoothing: float = 0.0,
    rpo_alpha: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of B pairs: (per-pair losses [B], metric sums).

    policy_logps, reference_logps and counts are [2B]: summed reply log-probs and reply token
    counts (sequence_logps), chosen rows first, then rejected.
    """
    B = policy_logps.shape[0] // 2
    chosen_nll = -policy_logps[:B] / counts[:B]  # [B] mean NLL per chosen token (RPO)
    if LOSSES[loss_type].per_token_average:
        policy_logps, reference_logps = policy_logps / counts, reference_logps / counts
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_logps[:B], policy_logps[B:], reference_logps[:B], reference_logps[B:],
        beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
    )  # fmt: skip
    metrics = preference_metrics(
        chosen_rewards, rejected_rewards, policy_logps[:B], policy_logps[B:]
    )
    if rpo_alpha:
        losses = losses + rpo_alpha * chosen_nll
        metrics["nll/chosen"] = chosen_nll.detach().sum()
    return losses, metrics


def preference_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Sums over the batch of the per-pair values TensorBoard shows (divide by the pair count).

    Sums rather than means so that micro-batches, accumulation steps and DDP ranks combine
    exactly: add the sums, add the pair counts, divide once.
    """
    return {
        "rewards/chosen": chosen_rewards.sum(),
        "rewards/rejected": rejected_rewards.sum(),
        "rewards/margins": (chosen_rewards - rejected_rewards).sum(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().sum(),
        "logps/chosen": policy_chosen_logps.detach().sum(),
        "logps/rejected": policy_rejected_logps.detach().sum(),
    }


def sequence_logps(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's target tokens, and how many there are.

    logits [N, T, V] (any float dtype; training/losses.token_log_probs computes in float32, as
    a fused kernel on a GPU with --compile), targets [N, T] with IGNORE_INDEX wherever a
    position is not part of the reply (prompt, padding). Returns (sum_logps [N], counts [N]).
    """
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return token_log_probs(logits, targets).sum(dim=1), counts
