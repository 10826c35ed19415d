"""What a task is, how an example becomes log-likelihood requests, and the task registry.

A `Task` holds what one of lm-evaluation-harness's task yaml files holds (its dataset, splits,
`doc_to_text` / `doc_to_choice` / `doc_to_target`, target delimiter, metrics), and
`build_requests` turns its examples into requests the way lm-eval's `ConfigurableTask` does:

- multiple_choice: one request per choice, (context, target_delimiter + choice);
- multiple_choice with `multiple_input` (Winogrande's partial scoring): one request per
  choice, (context with the choice filled in, target_delimiter + the shared rest);
- loglikelihood (LAMBADA): one request, (context, target), the target carrying its own space.

The context is `num_fewshot` solved examples, then the question:
`q1 + " " + a1 + "\\n\\n" + ... + q`, the examples drawn by `random.Random(seed).sample` from the
few-shot split, one draw per evaluated example in order, as lm-eval's sampler draws them
(`draw_fewshot`).
With `chat=True` (lm-eval's `--apply_chat_template`, few-shot examples as turns) the question is
a user turn after one user and one assistant turn per solved example, the model answers in an
assistant turn, and the target delimiter is empty.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from common.errors import UserError

FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
FEWSHOT_DELIMITER = "\n\n"


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str  # its copy's name in dataset/evaluation/sources.py (lm-eval's dataset_path)
    eval_split: str  # lm-eval's test split, else its validation split
    fewshot_split: str | None  # lm-eval's training split, else validation, else test
    output_type: str  # "multiple_choice" | "loglikelihood"
    metrics: tuple[str, ...]  # "acc", "acc_norm", "perplexity"
    doc_to_text: Callable[[dict], str | int]  # an int: the gold index (multiple_input)
    doc_to_target: Callable[[dict], int | str]
    doc_to_choice: Callable[[dict], list[str]] | None = None
    process_doc: Callable[[dict], dict] = field(default=lambda doc: doc)
    multiple_input: bool = False  # one context per choice, one shared continuation
    # lm-eval passes the evaluated doc to its few-shot sampler when the task has no test split
    # (HellaSwag, PIQA, Winogrande): it draws one example more and drops the evaluated one
    fewshot_skips_eval_doc: bool = False
    target_delimiter: str = " "
    version: float = 1.0  # lm-eval's metadata version of the task
    summary: str = ""  # one line for --help
    lm_eval_task: bool = True  # False: our own task (no lm-eval counterpart)


@dataclass(frozen=True)
class Example:
    """One evaluated document: its requests and what scoring needs to judge them."""

    index: int  # position in the evaluation split
    requests: list[tuple[str, str]]  # (context, continuation) per choice, or one for LAMBADA
    gold: int  # index of the right request (0 for LAMBADA)
    choices: list[str]  # the choice texts, whose lengths acc_norm divides by
    chat_contexts: list[list[dict]] | None = None  # per request: the messages (chat only)


def solved(task: Task, doc: dict) -> tuple[str, str]:
    """A few-shot example as lm-eval builds it: (question, answer text)."""
    question, target = task.doc_to_text(doc), task.doc_to_target(doc)
    if task.multiple_input:  # Winogrande: the question is the right choice's filled-in text
        question = task.doc_to_choice(doc)[question]
    elif isinstance(target, int):
        target = task.doc_to_choice(doc)[target]
    return question, target


def build_requests(
    task: Task,
    docs: list[dict],
    fewshot_docs: list[dict] | None = None,
    num_fewshot: int = 0,
    chat: bool = False,
    seed: int = FEWSHOT_SEED,
) -> list[Example]:
    """The examples of `docs` (already processed), with `num_fewshot` solved ones before each."""
    needed = num_fewshot + (1 if task.fewshot_skips_eval_doc else 0)
    if num_fewshot and (not fewshot_docs or len(fewshot_docs) < needed):
        available = len(fewshot_docs or [])
        raise UserError(
            f"--num-fewshot {num_fewshot}: {task.name} has only {available} examples to draw from"
        )
    rng = random.Random(seed)
    examples = []
    for index, doc in enumerate(docs):
        shots = []
        if num_fewshot:
            picked = draw_fewshot(task, rng, fewshot_docs, num_fewshot, doc)
            shots = [solved(task, shot) for shot in picked]
        examples.append(_example(task, index, doc, shots, chat))
    return examples


def draw_fewshot(task: Task, rng: random.Random, pool: list[dict], k: int, doc: dict) -> list:
    """lm-eval's ContextSampler.sample: k docs of the pool (one more, less the evaluated doc, for
    the tasks that pass it); the same draws from the same seed, example after example."""
    if not task.fewshot_skips_eval_doc:
        return rng.sample(pool, k)
    picked = [shot for shot in rng.sample(pool, k + 1) if shot != doc][:k]
    if len(picked) < k:  # the pool held copies of the evaluated doc
        picked = rng.sample([shot for shot in pool if shot != doc], k)
    return picked


def _example(task: Task, index: int, doc: dict, shots: list[tuple[str, str]], chat: bool):
    """Plain text: the shots as "q a\n\n" before the question. Chat (lm-eval's default
    fewshot_as_multiturn): each shot a user turn and an assistant turn, then the question."""
    delimiter = "" if chat else task.target_delimiter
    prefix = "".join(q + task.target_delimiter + a + FEWSHOT_DELIMITER for q, a in shots)
    turns = [
        {"role": r, "content": c} for q, a in shots for r, c in (("user", q), ("assistant", a))
    ]
    text, target = task.doc_to_text(doc), task.doc_to_target(doc)
    if task.output_type == "loglikelihood":
        questions, continuations, gold, choices = [text], [target], 0, [target]
    elif task.multiple_input:
        choices = task.doc_to_choice(doc)
        questions = choices
        continuations = [delimiter + target] * len(choices)
        gold = text
    else:
        choices = task.doc_to_choice(doc)
        questions = [text] * len(choices)
        continuations = [delimiter + choice for choice in choices]
        gold = target if isinstance(target, int) else choices.index(target)
    chat_contexts = None
    if chat:
        chat_contexts = [[*turns, {"role": "user", "content": q}] for q in questions]
    return Example(
        index=index,
        requests=[(prefix + q, c) for q, c in zip(questions, continuations)],
        gold=gold,
        choices=choices,
        chat_contexts=chat_contexts,
    )


# ---------------------------------------------------------------- registry

TASKS: dict[str, Task] = {}
GROUPS: dict[str, tuple[str, ...]] = {}


def register(*tasks: Task) -> None:
    for task in tasks:
        TASKS[task.name] = task


def _load_families() -> None:
    """Import the task families (each registers its tasks)."""
    from evaluation import arc, hellaswag, lambada, piqa, sample_world, winogrande  # noqa: F401


CORE = ("hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "lambada_openai")
CHAT_EXTRAS = ("arc_easy_letters", "arc_challenge_letters")  # added to `core` when chatting
GROUPS["core"] = CORE


def resolve_tasks(spec: str, chat: bool) -> list[Task]:
    """Task names and groups, comma-separated ("core,sample_world"), each task once, in order.

    The `core` group is the six zero-shot tasks of the Pythia / SmolLM / TinyLlama tables; when
    some model is scored as a chat model, it adds ARC's letter-answer forms too.
    """
    _load_families()
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError("--tasks is empty; give task names or a group, e.g. --tasks core")
    chosen: list[str] = []
    for name in names:
        if name in GROUPS:
            chosen += GROUPS[name] + (CHAT_EXTRAS if name == "core" and chat else ())
        elif name in TASKS:
            chosen.append(name)
        else:
            known = ", ".join([*GROUPS, *TASKS])
            raise UserError(f"unknown task {name!r}; known tasks and groups: {known}")
    return [TASKS[name] for name in dict.fromkeys(chosen)]


def all_tasks() -> dict[str, Task]:
    _load_families()
    return TASKS
