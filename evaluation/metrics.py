"""Per-example metrics and their aggregates with a standard error, as lm-eval computes them.

- multiple choice: `acc` = the choice with the highest log-likelihood is the gold one;
  `acc_norm` = the same after dividing each log-likelihood by its choice's length in characters
  (the choice text without the target delimiter); ties go to the first choice (numpy argmax);
- LAMBADA: `acc` = the greedy tokens are the target's; `perplexity` = exp(-mean log-likelihood).

Standard errors: for a mean, the sample standard deviation over sqrt(n) (lm-eval's
`mean_stderr`); for perplexity, the standard deviation of bootstrap replicates, like lm-eval's
`bootstrap_stderr` (100,000 resamples) but drawn with numpy, so it agrees with lm-eval's figure to
the bootstrap's own noise rather than digit for digit.
"""

from __future__ import annotations

import math

import numpy as np

from evaluation.scoring import Score
from evaluation.tasks import Example, Task

BOOTSTRAP_ITERS = 100_000
HIGHER_IS_BETTER = {"acc": True, "acc_norm": True, "perplexity": False}


def example_metrics(task: Task, example: Example, scores: list[Score]) -> dict[str, float]:
    """Each metric's value for one example (perplexity: the log-likelihood, aggregated later)."""
    if task.output_type == "loglikelihood":
        (score,) = scores
        values = {"perplexity": score.loglikelihood, "acc": float(score.greedy)}
    else:
        lls = np.array([score.loglikelihood for score in scores])
        lengths = np.array([float(len(choice)) for choice in example.choices])
        values = {
            "acc": float(np.argmax(lls) == example.gold),
            "acc_norm": float(np.argmax(lls / lengths) == example.gold),
        }
    return {name: values[name] for name in task.metrics}


def aggregate(name: str, items: list[float]) -> float:
    if name == "perplexity":
        return math.exp(-sum(items) / len(items))
    return sum(items) / len(items)


def stderr(name: str, items: list[float], bootstrap_iters: int = BOOTSTRAP_ITERS) -> float | None:
    """The standard error of `aggregate(name, items)`; None for a single item (lm-eval: N/A)."""
    if len(items) < 2:
        return None
    values = np.asarray(items, dtype=np.float64)
    if name != "perplexity":
        return float(values.std(ddof=1) / math.sqrt(len(values)))
    if bootstrap_iters < 2:
        return None
    rng = np.random.default_rng(0)  # its own generator: no global random state moves
    replicates = []
    for start in range(0, bootstrap_iters, 1000):
        count = min(1000, bootstrap_iters - start)
        draws = rng.integers(0, len(values), size=(count, len(values)))  # [count, n]
        replicates.append(np.exp(-values[draws].mean(axis=1)))
    return float(np.concatenate(replicates).std(ddof=1))


def random_baseline(task: Task, examples: list[Example]) -> dict[str, float | None]:
    """What guessing scores: 1 / number of choices, averaged (LAMBADA: none)."""
    if task.output_type == "loglikelihood":
        return {name: None for name in task.metrics}
    chance = sum(1.0 / len(example.requests) for example in examples) / max(len(examples), 1)
    return {name: chance for name in task.metrics}
