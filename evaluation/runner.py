"""Score one model on one task: requests -> token ids -> batched log-likelihoods -> metrics.

    result = run_task(model, task, docs, fewshot_docs, num_fewshot=0, chat=False)
    result.scores["acc_norm"], result.stderrs["acc_norm"], result.per_example[0]

The training scripts' in-run scores (training/task_scores.py) call this on the model in memory;
`python3 -m evaluation` calls it for every model and task it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tqdm import tqdm

from evaluation.metrics import BOOTSTRAP_ITERS, aggregate, example_metrics, random_baseline, stderr
from evaluation.models import ScoredModel
from evaluation.scoring import Score, score_pairs
from evaluation.tasks import FEWSHOT_SEED, Task, build_requests


@dataclass
class TaskResult:
    task: Task
    scores: dict[str, float]  # metric -> aggregate
    stderrs: dict[str, float | None]
    baseline: dict[str, float | None]  # what random guessing scores
    per_example: list[dict]  # per evaluated example: metrics, the choice picked, log-likelihoods
    num_examples: int
    num_fewshot: int
    chat: bool
    seconds: float


def run_task(
    model: ScoredModel,
    task: Task,
    docs: list[dict],
    fewshot_docs: list[dict] | None = None,
    num_fewshot: int = 0,
    chat: bool = False,
    batch_size: int = 32,
    fewshot_seed: int = FEWSHOT_SEED,
    progress: bool = True,
    bootstrap_iters: int = BOOTSTRAP_ITERS,
) -> TaskResult:
    started = time.perf_counter()
    examples = build_requests(task, docs, fewshot_docs, num_fewshot, chat, fewshot_seed)
    pairs = encode(model, examples, chat)
    bar = tqdm(
        total=len(examples), desc=f"{model.name} {task.name}", unit="ex", disable=not progress
    )
    with bar:
        scores = score_pairs(model, pairs, batch_size, bar.update)
    per_example, items = [], {name: [] for name in task.metrics}
    for example, example_scores in zip(examples, scores):
        values = example_metrics(task, example, example_scores)
        for name, value in values.items():
            items[name].append(value)
        per_example.append(_sample(example, example_scores, values))
    return TaskResult(
        task=task,
        scores={name: aggregate(name, items[name]) for name in task.metrics},
        stderrs={name: stderr(name, items[name], bootstrap_iters) for name in task.metrics},
        baseline=random_baseline(task, examples),
        per_example=per_example,
        num_examples=len(examples),
        num_fewshot=num_fewshot,
        chat=chat,
        seconds=time.perf_counter() - started,
    )


def encode(model: ScoredModel, examples, chat: bool) -> list[list[tuple[list[int], list[int]]]]:
    """Every example's requests as (context ids, continuation ids), encoded in one batch."""
    flat_pairs = [pair for example in examples for pair in example.requests]
    if chat:
        conversations = [c for example in examples for c in example.chat_contexts]
        encoded = model.encode_chat_pairs(conversations, [x for _, x in flat_pairs])
    else:
        encoded = model.encode_pairs(flat_pairs)
    out, start = [], 0
    for example in examples:
        out.append(encoded[start : start + len(example.requests)])
        start += len(example.requests)
    return out


def _sample(example, scores: list[Score], values: dict) -> dict:
    lls = [score.loglikelihood for score in scores]
    return {
        "doc_id": example.index,
        "target": example.gold,
        "loglikelihoods": lls,
        "greedy": [score.greedy for score in scores],
        "pred": max(range(len(lls)), key=lambda i: (lls[i], -i)),
        **values,
    }
