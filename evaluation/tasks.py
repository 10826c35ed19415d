"""The tasks a run scores (lm-eval's, built once from our data copies) and a model scored on them.

    names = resolve_tasks("core,gsm8k", chat=False)     # unknown names: a one-line error
    tasks, missing = load_tasks(names, "data/evaluation")
    results = evaluate_tasks(lm, tasks, limit=300)      # lm-eval's results dict

Used by `python3 -m evaluation` and the training scripts' in-run scores (training/task_scores.py).
"""

from __future__ import annotations

import functools
from unittest import mock

import lm_eval.utils
from lm_eval import evaluator

from common.errors import UserError
from dataset.evaluation.download_dataset import MissingCopy, local_copies, task_manager
from dataset.evaluation.download_dataset import task_names as expand_names

FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
LETTER_TASKS = ("arc_easy_letters", "arc_challenge_letters")  # `core` adds them for chat models
compiled_template = functools.cache(lm_eval.utils.env.from_string)


def render_template(template: str, doc: dict) -> str:
    """lm_eval.utils.apply_template with each Jinja prompt compiled once, not once per document
    (evaluate_tasks puts it in place while lm-eval evaluates); the text is the same."""
    return compiled_template(template).render(**doc)


def resolve_tasks(spec: str, chat: bool = False) -> list[str]:
    """Comma-separated lm-eval task and group names; `core`: our six zero-shot tasks, and ARC's
    letter forms when a model is scored as a chat model. Each name once, in order."""
    names = expand_names(spec)
    if chat and "core" in [name.strip() for name in spec.split(",")]:
        names += [name for name in LETTER_TASKS if name not in names]
    task_manager(tuple(names))
    return names


def load_tasks(names: list[str], data_dir, skip_missing: bool = False) -> tuple[dict, list[str]]:
    """(lm-eval's task dict of `names`, the names left out): each task reads its dataset's copy
    in data_dir; a missing copy is a one-line error naming the command that makes it, or with
    skip_missing that task is left out."""
    manager = task_manager(tuple(names))
    tasks = {"tasks": {}, "groups": {}, "group_map": {}}
    missing = []
    with local_copies(data_dir):
        for name in names:
            try:
                loaded = manager.load(name)
            except MissingCopy as error:
                if not skip_missing:
                    raise error.naming(name, data_dir) from None
                missing.append(name)
                continue
            for key in tasks:
                tasks[key] |= loaded.get(key, {})
    return tasks, missing


def evaluate_tasks(
    lm,
    tasks: dict,
    limit: int | None = None,
    num_fewshot: int | None = None,
    fewshot_seed: int = FEWSHOT_SEED,
    chat: bool = False,
    bootstrap_iters: int = 1000,
) -> dict:
    """lm-eval's results of `lm` on `tasks` (with every example's samples), the tasks set up as
    lm-eval's simple_evaluate sets them: num_fewshot (None: each task's default), the few-shot
    seed, chat (lm-eval's --apply_chat_template, few-shot examples as turns)."""
    for task in tasks["tasks"].values():
        default = task.get_config("num_fewshot")
        if num_fewshot is not None and default != 0:
            task.set_config(key="num_fewshot", value=num_fewshot)
        elif default is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=fewshot_seed)
        shots = task.get_config("num_fewshot")
        if shots and len(pool := task.fewshot_docs() or []) < shots:
            raise UserError(
                f"{task.task_name} is {shots}-shot but has only {len(pool)} examples to draw "
                "from; give --num-fewshot a smaller K"
            )
    with mock.patch.object(lm_eval.utils, "apply_template", render_template):
        return evaluator.evaluate(
            lm,
            tasks,
            limit=limit,
            bootstrap_iters=bootstrap_iters,
            apply_chat_template=chat,
            fewshot_as_multiturn=chat,
        )


def metric_values(results: dict) -> list[tuple[str, str, float, float | None]]:
    """(task, metric, value, standard error or None) of every figure in lm-eval's results; the
    metric as lm-eval names it less a `,none` filter ("acc", "exact_match,strict-match")."""
    figures = []
    for task, entries in results["results"].items():
        for key, value in entries.items():
            if "," not in key or "_stderr," in key or not isinstance(value, int | float):
                continue
            metric, _, kept = key.partition(",")
            error = entries.get(f"{metric}_stderr,{kept}")
            name = metric if kept == "none" else key
            figures.append((task, name, float(value), error if isinstance(error, float) else None))
    return figures
