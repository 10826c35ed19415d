"""Benchmark scores during training (training/task_scores.py): lm-eval's tasks through our LM,
logged as eval/<task>/<metric>, in the closing summary, no random generator moved (exact resume
stays exact), missing data one warning line at the start, DDP unchanged."""

import json
import random
import signal

import numpy as np
import pytest
import torch
from training_fixtures import logged_scalars, make_inputs, signal_at, tiny_config, torchrun

from common.errors import UserError
from training.pretraining_stage import PretrainingStage
from training.task_scores import summary
from training.trainer import train

SAMPLE = dict(eval_tasks="sample_world", eval_tasks_limit=12, eval_tasks_interval=4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def test_scores_are_logged_summarised_and_resume_stays_exact(tmp_path, inputs):
    data_dir = str(tmp_path / "no_copies")  # the sample world's test is generated
    straight = train(
        tiny_config(tmp_path, *inputs, run_name="straight", eval_data_dir=data_dir, **SAMPLE),
        PretrainingStage,
    )
    assert set(straight.task_scores) == {"eval/sample_world/acc", "eval/sample_world/acc_norm"}
    acc = logged_scalars(straight.run_dir, "eval/sample_world/acc")
    assert len(acc) == 2 and acc[-1] == straight.task_scores["eval/sample_world/acc"]  # 4, 8
    assert straight.task_summary.startswith("sample_world acc ")

    config = tiny_config(tmp_path, *inputs, run_name="stopped", eval_data_dir=data_dir, **SAMPLE)
    first = train(config, signal_at(4, signal.SIGTERM))  # scores at step 4, stops after 5
    assert first.stopped_by_signal and first.step == 5
    second = train(
        tiny_config(
            tmp_path, *inputs, run_name="stopped", resume=True, eval_data_dir=data_dir, **SAMPLE
        ),
        PretrainingStage,
    )
    assert first.losses + second.losses == straight.losses  # exact float equality
    assert second.task_scores == straight.task_scores


def test_scoring_moves_no_random_generator(tmp_path, inputs, monkeypatch):
    """Even when a task draws from the global generators (some of lm-eval's shuffle choices with
    `random`), they are as they were after scoring."""
    run = train(tiny_config(tmp_path, *inputs, max_steps=1, eval_tasks=""), PretrainingStage)
    from training import task_scores
    from training.task_scores import TaskScores

    evaluate_tasks = task_scores.evaluate_tasks

    def drawing(*args, **kwargs):
        random.random(), np.random.rand(), torch.rand(1)
        return evaluate_tasks(*args, **kwargs)

    monkeypatch.setattr(task_scores, "evaluate_tasks", drawing)
    config = tiny_config(tmp_path, *inputs, eval_data_dir=str(tmp_path), **SAMPLE)
    context = type("Context", (), {})()  # what TaskScores reads of the run context
    context.is_main, context.tokenizer, context.device = True, run.tokenizer, torch.device("cpu")
    context.precision = "fp32"
    scores = TaskScores(config, "pre_training", context)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    run.model.train()
    log = type("Log", (), {"scalars": lambda self, values, step: None})()
    progress = type("Progress", (), {"write": lambda self, text: None})()
    result = scores.run(run.model, 1, log, progress)
    assert run.model.training, "back in train mode"
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    assert set(result) == {"eval/sample_world/acc", "eval/sample_world/acc_norm"}


def test_missing_data_is_one_warning_line_and_the_run_goes_on(tmp_path, inputs, capsys):
    config = tiny_config(
        tmp_path,
        *inputs,
        max_steps=4,
        eval_tasks="piqa,sample_world",
        eval_tasks_limit=4,
        eval_tasks_interval=4,
        eval_data_dir=str(tmp_path / "empty"),
    )
    result = train(config, PretrainingStage)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "piqa" in warnings[0] and "download_dataset" in warnings[0]
    assert set(result.task_scores) == {"eval/sample_world/acc", "eval/sample_world/acc_norm"}


def test_bad_settings_are_user_errors(tmp_path, inputs):
    with pytest.raises(UserError, match="unknown task 'hellaswg'; closest: hellaswag"):
        tiny_config(tmp_path, *inputs, eval_tasks="core,hellaswg").check()
    with pytest.raises(UserError, match="unknown task 'nope'"):
        tiny_config(tmp_path, *inputs, eval_tasks="core,nope").check()
    with pytest.raises(UserError, match="eval_tasks_interval"):
        tiny_config(tmp_path, *inputs, eval_tasks_interval=0).check()
    with pytest.raises(UserError, match="eval_tasks_limit"):
        tiny_config(tmp_path, *inputs, eval_tasks_limit=-1).check()


def test_summary_formats_accuracies_and_perplexity():
    text = summary(
        {
            "eval/hellaswag/acc_norm": 0.3114,
            "eval/lambada_openai/perplexity": 40.05,
            "eval/gsm8k/exact_match,strict-match": 0.25,
        }
    )
    assert text == (
        "hellaswag acc_norm 31.1%, lambada_openai perplexity 40.05, "
        "gsm8k exact_match,strict-match 25.0%"
    )


def test_ddp_scores_on_rank_zero_like_one_process(tmp_path):
    tokenizer, data = make_inputs(tmp_path)
    common = dict(
        max_steps=4,
        tokens_per_step=256,
        eval_interval=2,
        checkpoint_interval=2,
        eval_data_dir=str(tmp_path / "none"),
        **SAMPLE | {"eval_tasks_interval": 2},
    )
    reference = train(
        tiny_config(tmp_path, tokenizer, data, run_name="one", **common), PretrainingStage
    )
    completed = torchrun(
        "pre_training.py", tiny_config(tmp_path, tokenizer, data, run_name="ddp", **common)
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("benchmarks (eval_tasks): sample_world") == 1  # rank 0 only
    run_dir = tmp_path / "checkpoints" / "ddp"
    for tag in ("eval/sample_world/acc", "eval/sample_world/acc_norm"):
        values = logged_scalars(reference.run_dir, tag)
        assert len(values) == 2 and logged_scalars(run_dir, tag) == pytest.approx(values), tag


def test_time_to_loss_reports_the_scores_at_each_recipes_end(tmp_path, capsys):
    from benchmarks import time_to_loss

    tokenizer, data = make_inputs(tmp_path)
    argv = [
        "--data-dir",
        str(data),
        "--tokenizer-path",
        str(tokenizer),
        "--block-size",
        "32",
        "--micro-batch-size",
        "4",
        "--tokens-per-step",
        "128",
        "--max-tokens",
        "512",
        "--evals",
        "2",
        "--eval-batches",
        "1",
        "--out-dir",
        str(tmp_path / "runs"),
        "--recipes",
        "baseline",
        "default",
        "--eval-tasks",
        "sample_world",
        "--eval-tasks-limit",
        "8",
        "--json",
        str(tmp_path / "summary.json"),
    ]
    assert time_to_loss.main(argv) == 0
    summary_file = json.loads((tmp_path / "summary.json").read_text())
    for recipe in ("baseline", "default"):
        assert set(summary_file[recipe]["task_scores"]) == {
            "eval/sample_world/acc",
            "eval/sample_world/acc_norm",
        }
    out = capsys.readouterr().out
    assert "benchmark scores at the end of each run" in out and "sample_world acc" in out
