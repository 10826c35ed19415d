"""The figures of a run: a table on the terminal, and a JSON file in lm-eval's results layout.

JSON (`--json PATH`), the keys lm-eval's results_*.json has, so tools that read one read the
other: "results" -> task -> "alias", "acc,none", "acc_stderr,none", "acc_norm,none", ...,
"perplexity,none"; "group_subtasks", "configs" (dataset, splits, delimiters, metrics, version),
"versions", "n-shot", "higher_is_better", "n-samples" ({original, effective}), "config" (model,
model_args, batch_size, device, limit, bootstrap_iters, fewshot_seed, ...), "date"; plus ours:
"lm_eval_definitions" (the version whose task definitions these are), "random_baseline", and
"samples" (per example: target, log-likelihoods, pred, metrics) with --log-samples.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common.atomic import atomic_write_text
from dataset.evaluation.sources import SOURCES
from evaluation.metrics import BOOTSTRAP_ITERS, HIGHER_IS_BETTER
from evaluation.references import REFERENCE_SCORES
from evaluation.runner import TaskResult
from evaluation.tasks import FEWSHOT_DELIMITER

LM_EVAL_VERSION = "0.4.13"


def task_config(result: TaskResult) -> dict:
    task, source = result.task, SOURCES[result.task.dataset]
    return {
        "task": task.name,
        "dataset_path": source.hub_id,
        "dataset_name": source.config,
        "eval_split": task.eval_split,
        "fewshot_split": task.fewshot_split,
        "output_type": task.output_type,
        "target_delimiter": "" if result.chat else task.target_delimiter,
        "fewshot_delimiter": FEWSHOT_DELIMITER,
        "num_fewshot": result.num_fewshot,
        "metric_list": [
            {"metric": name, "aggregation": "perplexity" if name == "perplexity" else "mean",
             "higher_is_better": HIGHER_IS_BETTER[name]}
            for name in task.metrics
        ],
        "metadata": {"version": task.version, "lm_eval_task": task.lm_eval_task},
    }  # fmt: skip


def lm_eval_layout(
    model, results: list[TaskResult], settings: dict, log_samples: bool = False
) -> dict:
    """One model's figures in the layout of lm-eval's results file."""
    by_task = {result.task.name: result for result in results}
    layout = {
        "results": {
            name: {
                "name": name,
                "alias": name,
                "sample_len": r.num_examples,
                **{
                    key: value
                    for metric in r.task.metrics
                    for key, value in (
                        (f"{metric},none", r.scores[metric]),
                        (f"{metric}_stderr,none", _or_na(r.stderrs[metric])),
                    )
                },
            }
            for name, r in by_task.items()
        },
        "group_subtasks": {name: [] for name in by_task},
        "configs": {name: task_config(r) for name, r in sorted(by_task.items())},
        "versions": {name: r.task.version for name, r in sorted(by_task.items())},
        "n-shot": {name: r.num_fewshot for name, r in sorted(by_task.items())},
        "higher_is_better": {
            name: {metric: HIGHER_IS_BETTER[metric] for metric in r.task.metrics}
            for name, r in sorted(by_task.items())
        },
        "n-samples": {
            name: {"original": settings["sizes"][name], "effective": r.num_examples}
            for name, r in by_task.items()
        },
        "config": {
            "model": "simple-transformer" if model.kind == "checkpoint" else "hf",
            "model_args": f"pretrained={model.source}",
            "model_name": model.name,
            "stage": model.stage,
            "apply_chat_template": any(r.chat for r in results),
            "batch_size": settings["batch_size"],
            "device": str(model.device),
            "dtype": "bfloat16" if model.bf16 else "float32",
            "limit": settings["limit"],
            "bootstrap_iters": settings.get("bootstrap_iters", BOOTSTRAP_ITERS),
            "fewshot_seed": settings["fewshot_seed"],
            **model.details,
        },
        "date": time.time(),
        "total_evaluation_time_seconds": str(round(sum(r.seconds for r in results), 2)),
        "lm_eval_definitions": LM_EVAL_VERSION,
        "random_baseline": {name: r.baseline for name, r in by_task.items()},
    }
    if log_samples:
        layout["samples"] = {name: r.per_example for name, r in by_task.items()}
    return layout


def _or_na(value: float | None):
    return "N/A" if value is None else value


def write_json(path: str | Path, layouts: list[dict]) -> list[Path]:
    """One model: PATH. Several: one file per model, PATH's name + "." + the model's name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(layouts) == 1:
        targets = [path]
    else:
        names = [layout["config"]["model_name"].replace("/", "_") for layout in layouts]
        targets = [path.with_name(f"{path.stem}.{name}{path.suffix}") for name in names]
    for target, layout in zip(targets, layouts):
        atomic_write_text(target, json.dumps(layout, indent=2, default=str) + "\n")
    return targets


# ---------------------------------------------------------------- the table


def _figure(metric: str, value: float | None, error: float | None = None) -> str:
    if value is None:
        return ""
    if metric == "perplexity":
        text = f"{value:.2f}"
        return text + (f" ± {error:.2f}" if error is not None else "")
    text = f"{100 * value:.1f}"
    return text + (f" ± {100 * error:.1f}" if error is not None else "")


def table(models, results: list[list[TaskResult]], show_references: bool) -> str:
    """Task, metric, each model's score ± stderr, the random baseline, published figures."""
    names = {r.task.name for r in results[0]}
    references = [  # the reference models that have a figure for one of these tasks
        name for name, scores in REFERENCE_SCORES.items() if show_references and names & set(scores)
    ]
    header = ["task", "metric"] + [f"[{i + 1}]" for i in range(len(models))] + ["random"]
    header += references
    rows = []
    for task_index, first in enumerate(results[0]):
        task = first.task
        for metric in task.metrics:
            row = [task.name, metric]
            for model_results in results:
                r = model_results[task_index]
                row.append(_figure(metric, r.scores[metric], r.stderrs[metric]))
            row.append(_figure(metric, first.baseline[metric]))
            for name in references:
                row.append(_figure(metric, REFERENCE_SCORES[name].get(task.name, {}).get(metric)))
            rows.append(row)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = []
    for i, model in enumerate(models):
        mode = "chat" if results[i] and results[i][0].chat else "plain"
        shots = results[i][0].num_fewshot if results[i] else 0
        lines.append(
            f"[{i + 1}] {model.name} ({model.source}; {model.kind}, stage {model.stage}): "
            f"scored as {'a chat model' if mode == 'chat' else 'plain text'}, {shots}-shot"
        )
    lines.append("accuracies in %, ± one standard error; perplexity: lower is better")
    if references:
        lines.append("published zero-shot figures, their sources: README.md, Evaluate")
    lines.append("")
    for row in [header, *rows]:
        cells = [
            str(c).ljust(w) if k < 2 else str(c).rjust(w)
            for k, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
