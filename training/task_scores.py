"""Benchmark scores during training: every `eval_tasks_interval` steps (and at the last one), the
run's model on the first `eval_tasks_limit` examples of each task of `eval_tasks`, with
lm-eval's definitions (evaluation/), logged to TensorBoard as eval/<task>/<metric>
(eval/hellaswag/acc_norm ...) and given in the run's closing summary.

    --eval_tasks=core --eval_tasks_interval=1000 --eval_tasks_limit=300   # pre_training.py's
    --eval_tasks=sample_world --eval_data_dir=data/sample/evaluation      # the sample pipeline's
    --eval_tasks=                                                          # off

- The examples are read once, at the start, from eval_data_dir (written by `python3 -m
  dataset.evaluation.download_dataset`); a task without a copy there is left out, with one
  warning line at the start: a run never fetches data or stops because of a benchmark.
- SFT and DPO runs are scored as chat models (the chat template they train on), pre-training
  on plain text, as `python3 -m evaluation` scores their checkpoints by default.
- Rank 0 scores, with the plain model (not compiled, not DDP), in eval mode under no_grad,
  bf16 when the run is bf16; the other ranks wait at the next step's first collective.
- Nothing random runs (no dropout, no sampling, few-shot off, no bootstrap), so no random
  number generator moves: a resumed run stays exactly the run that never stopped.
"""

from __future__ import annotations

import torch

from common.errors import UserError
from evaluation.data import load_dataset_dict, task_docs
from evaluation.models import CHAT_STAGES, CheckpointModel
from evaluation.runner import run_task
from evaluation.tasks import resolve_tasks
from training.stage import RunContext


class TaskScores:
    def __init__(self, config, stage_name: str, context: RunContext):
        self.interval = config.eval_tasks_interval
        self.chat = stage_name in CHAT_STAGES
        self.stage_name, self.context = stage_name, context
        self.runs: list = []  # (task, docs): rank 0 only
        if not config.eval_tasks.strip():
            return
        tasks = resolve_tasks(config.eval_tasks, chat=self.chat)  # an unknown name: UserError
        if not context.is_main:
            return
        missing = []
        for task in tasks:
            try:
                copy = load_dataset_dict(task.dataset, config.eval_data_dir, download=False)
            except UserError:
                missing.append(task.name)
                continue
            docs, _, _ = task_docs(task, copy, config.eval_tasks_limit or None, False)
            self.runs.append((task, docs))
        if missing:
            kept = ", ".join(task.name for task, _ in self.runs) or "none"
            print(
                f"warning: eval_tasks: no copy of {', '.join(missing)} in "
                f"{config.eval_data_dir}, left out (scoring: {kept}); `python3 -m "
                f"dataset.evaluation.download_dataset --output-dir {config.eval_data_dir}` "
                "fetches them",
                flush=True,
            )

    def due(self, step: int, max_steps: int) -> bool:
        return bool(self.runs) and (step % self.interval == 0 or step == max_steps)

    @torch.no_grad()
    def run(self, model: torch.nn.Module, step: int, log, progress) -> dict[str, float]:
        """{eval/<task>/<metric>: score}, logged and printed; the model is back in train mode."""
        context = self.context
        scored = CheckpointModel(model, context.tokenizer, "run", self.stage_name,
                                 context.device, bf16=context.precision == "bf16")  # fmt: skip
        batch_size = 64 if context.device.type == "cuda" else 32
        was_training = model.training
        model.eval()
        try:
            scores = {}
            for task, docs in self.runs:
                result = run_task(scored, task, docs, chat=self.chat, batch_size=batch_size,
                                  progress=False, bootstrap_iters=0)  # fmt: skip
                scores |= {f"eval/{task.name}/{m}": value for m, value in result.scores.items()}
        finally:
            model.train(was_training)
        log.scalars(scores, step)
        progress.write(f"step {step}: " + " | ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        return scores


def summary(scores: dict[str, float]) -> str:
    """For a closing report: "hellaswag acc_norm 31.2%, lambada_openai perplexity 40.06"."""
    parts = []
    for key, value in scores.items():
        _, task, metric = key.split("/")
        figure = f"{value:.2f}" if metric == "perplexity" else f"{100 * value:.1f}%"
        parts.append(f"{task} {metric} {figure}")
    return ", ".join(parts)
