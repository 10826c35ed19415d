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
tokens (the caller passes them). With policy == reference, z = 0 and the sigmoid loss is ln 2
whatever beta is.

The implicit rewards are `beta * (log pi(y) - log ref(y))`; a pair counts as "accurate" when the
chosen reply's reward is strictly larger than the rejected one's.
"""

import torch
import torch.nn.functional as F

from common.errors import UserError

LOSS_TYPES = ("sigmoid", "robust", "ipo")


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
    """Per-pair losses and implicit rewards; every input is [B] (float32 recommended).

    Returns (losses [B], chosen_rewards [B], rejected_rewards [B]). Rewards are detached: they
    are for logging, the gradient flows through `losses` into the policy log-probs only.
    """
    policy_margin = policy_chosen_logps - policy_rejected_logps
    reference_margin = reference_chosen_logps - reference_rejected_logps
    z = policy_margin - reference_margin.detach()  # the reference never gets gradients
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * z) - label_smoothing * F.logsigmoid(
            -beta * z
        )
    elif loss_type == "robust":
        losses = (
            -(1 - label_smoothing) * F.logsigmoid(beta * z)
            + label_smoothing * F.logsigmoid(-beta * z)
        ) / (1 - 2 * label_smoothing)
    elif loss_type == "ipo":
        losses = (z - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {LOSS_TYPES}")
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


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

    logits [N, T, V] (any float dtype; computed in float32), targets [N, T] with -100 wherever a
    position is not part of the reply (prompt, padding). Returns (sum_logps [N], counts [N]).
    """
    N, T, V = logits.shape
    token_logps = -F.cross_entropy(
        logits.float().reshape(N * T, V),  # [N*T, V]
        targets.reshape(N * T),  # [N*T]
        ignore_index=-100,
        reduction="none",
    ).view(N, T)  # ignored positions come back as exactly 0
    counts = (targets != -100).sum(dim=1)
    return token_logps.sum(dim=1), counts
