"""Benchmark scores during training (--eval_tasks=core; empty: off): rank 0 scores the plain
model on the first eval_tasks_limit examples of each task every eval_tasks_interval steps,
through lm-eval (evaluation/), as eval/<task>/<metric>. SFT and DPO are scored as chat models.
A task without a copy in eval_data_dir is left out with a warning; the random generators are
put back afterwards, so a resumed run stays bitwise the same.
"""

from __future__ import annotations

import contextlib
import io
import random

import numpy as np
import torch

from evaluation.lm import CHAT_STAGES, SimpleTransformerLM
from evaluation.tasks import evaluate_tasks, load_tasks, metric_values, resolve_tasks
from training.stage import RunContext


class TaskScores:
    def __init__(self, config, stage_name: str, context: RunContext):
        self.interval = config.eval_tasks_interval
        self.limit = config.eval_tasks_limit or None
        self.chat = stage_name in CHAT_STAGES
        self.stage_name, self.context = stage_name, context
        self.tasks = None  # lm-eval's task dict: rank 0 only
        if not config.eval_tasks.strip():
            return
        names = resolve_tasks(config.eval_tasks, chat=self.chat)  # an unknown name: UserError
        if not context.is_main:
            return
        self.tasks, missing = load_tasks(names, config.eval_data_dir, skip_missing=True)
        if missing:
            kept = ", ".join(self.tasks["tasks"]) or "none"
            print(
                f"warning: eval_tasks: no copy of {', '.join(missing)} in "
                f"{config.eval_data_dir}, left out (scoring: {kept}); `python3 -m "
                f"dataset.evaluation.download_dataset --output-dir {config.eval_data_dir} "
                f"--tasks {','.join(missing)}` makes them",
                flush=True,
            )

    def due(self, step: int, max_steps: int) -> bool:
        return bool(self.tasks and self.tasks["tasks"]) and (
            step % self.interval == 0 or step == max_steps
        )

    @torch.no_grad()
    def run(self, model: torch.nn.Module, step: int, log, progress) -> dict[str, float]:
        """{eval/<task>/<metric>: score}, logged and printed; the model is back in train mode."""
        context = self.context
        batch_size = 64 if context.device.type == "cuda" else 32
        bf16 = context.precision == "bf16"
        lm = SimpleTransformerLM(model, context.tokenizer, batch_size, bf16)
        was_training = model.training
        states = random.getstate(), np.random.get_state()
        cuda = [context.device] if context.device.type == "cuda" else []
        model.eval()
        try:
            # a task may draw from torch's generators; lm-eval's bars and notes go to stderr
            with torch.random.fork_rng(devices=cuda), contextlib.redirect_stderr(io.StringIO()):
                results = evaluate_tasks(
                    lm, self.tasks, self.limit, chat=self.chat, bootstrap_iters=0
                )
        finally:
            model.train(was_training)
            random.setstate(states[0])
            np.random.set_state(states[1])
        scores = {
            f"eval/{task}/{metric}": value for task, metric, value, _ in metric_values(results)
        }
        log.scalars(scores, step)
        progress.write(f"step {step}: " + " | ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        return scores


def summary(scores: dict[str, float]) -> str:
    """For a closing report: "hellaswag acc_norm 31.2%, lambada_openai perplexity 40.06"."""
    parts = []
    for key, value in scores.items():
        _, task, metric = key.split("/", 2)
        percent = metric.split(",")[0] in ("acc", "acc_norm", "exact_match")
        parts.append(f"{task} {metric} " + (f"{100 * value:.1f}%" if percent else f"{value:.2f}"))
    return ", ".join(parts)
