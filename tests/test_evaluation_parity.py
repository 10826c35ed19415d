"""Parity with lm-evaluation-harness: on the same rows, our per-example log-likelihoods, choices
and aggregate acc / acc_norm / perplexity equal what lm-eval computes (`simple_evaluate`, the
library call behind `lm_eval --model hf`) on the exported transformers folder of the same
checkpoint. Zero-shot, few-shot and chat.

No network: lm-eval reads the fixtures from local parquet files through task yaml files that
`include` its own task definitions (lm_eval/tasks/...) and only point `dataset_path` at them;
we read the same rows from data/evaluation-style copies (tests/evaluation_fixtures.py).
lm-eval is a test-only dependency (requirements-dev.txt).
"""

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from evaluation_fixtures import DATASETS, all_texts, fixture_dataset, write_evaluation_data
from tiny_tokenizer import train_tiny_tokenizer
from tokenizers import Tokenizer

from evaluation import data, hellaswag
from evaluation.models import load_checkpoint_model
from evaluation.results import lm_eval_layout
from evaluation.runner import run_task
from evaluation.tasks import TASKS, all_tasks
from model.checkpoint import save_model_files
from model.config import from_preset
from model.export.hf import export
from model.transformer import Transformer

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # lm-eval's hf model needs it

LM_EVAL_TASK_FILES = {
    "hellaswag": "hellaswag/hellaswag.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
}
FEWSHOT_TASKS = ("hellaswag", "arc_easy", "winogrande", "lambada_openai")
CHAT_TASKS = ("arc_easy", "piqa", "winogrande")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A checkpoint, its export, our data copies and lm-eval's local task yaml files."""
    root = tmp_path_factory.mktemp("parity")
    tokenizer = train_tiny_tokenizer(root / "tokenizer.json", all_texts() * 5, 400)
    vocab_size = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
    torch.manual_seed(0)
    model = Transformer(from_preset("debug", vocab_size=vocab_size)).eval()
    with torch.no_grad():  # sharper preferences: no choice wins by a rounding error
        model.lm_head.weight.mul_(8)
    config = {"stage": "pre_training", "step": 1, "tokenizer": {"sha256": ""}}
    save_model_files(model, root / "run" / "step_0000001", config, tokenizer)
    (root / "run" / "latest").write_text("step_0000001\n")
    hf_dir = export(root / "run", root / "hf")
    write_evaluation_data(root / "data")
    yaml_dir = root / "tasks"
    yaml_dir.mkdir()
    installed = Path(lm_eval.__file__).parent / "tasks"
    for name, relative in LM_EVAL_TASK_FILES.items():
        files = {}
        for split, dataset in fixture_dataset(name).items():
            files[split] = str(root / "parquet" / name / f"{split}.parquet")
            Path(files[split]).parent.mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(files[split])
        (yaml_dir / f"{name}.yaml").write_text(
            f"include: {installed / relative}\n"
            f"task: fixture_{name}\n"
            "tag: []\n"
            "dataset_path: parquet\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files: {json.dumps(files)}\n"
            f"  cache_dir: {root / 'hf_datasets_cache'}\n"
        )
    ours = load_checkpoint_model(str(root / "run"), torch.device("cpu"), bf16=False)
    return {"root": root, "hf": hf_dir, "yaml_dir": yaml_dir, "ours": ours}


@pytest.fixture(scope="module")
def harness(world):
    """lm-eval's model (the export, float32 on the CPU) and a task manager that knows only the
    fixture tasks (indexing all of lm-eval's tasks takes tens of seconds)."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    model = HFLM(pretrained=str(world["hf"]), dtype="float32", batch_size=4, device="cpu")
    tasks = TaskManager(include_path=str(world["yaml_dir"]), include_defaults=False)
    return model, tasks


def lm_eval_run(harness, names, **kwargs) -> dict:
    from lm_eval import simple_evaluate

    model, task_manager = harness
    return simple_evaluate(
        model=model,
        tasks=[f"fixture_{name}" for name in names],
        task_manager=task_manager,
        log_samples=True,
        bootstrap_iters=1000,
        **kwargs,
    )


@pytest.fixture(scope="module")
def zero_shot(harness):
    return lm_eval_run(harness, LM_EVAL_TASK_FILES)


def ours_run(world, name, num_fewshot=0, chat=False):
    task = all_tasks()[name]
    copy = data.load_dataset_dict(task.dataset, world["root"] / "data")
    docs, fewshot, _ = data.task_docs(task, copy, None, with_fewshot=num_fewshot > 0)
    # batch 3: the shared-context path and the row path both run, several examples per batch
    return run_task(world["ours"], task, docs, fewshot, num_fewshot, chat, batch_size=3,
                    progress=False, bootstrap_iters=1000)  # fmt: skip


def assert_same(mine, theirs_results, theirs_samples, name):
    samples = sorted(theirs_samples[f"fixture_{name}"], key=lambda sample: sample["doc_id"])
    assert len(samples) == len(mine.per_example) == len(DATASETS[name][1][mine.task.eval_split])
    for example, sample in zip(mine.per_example, samples):
        theirs = [float(response[0]) for response in sample["filtered_resps"]]
        assert example["loglikelihoods"] == pytest.approx(theirs, rel=1e-4, abs=1e-3), (
            f"{name} doc {example['doc_id']}"
        )
        assert example["greedy"] == [bool(response[1]) for response in sample["filtered_resps"]]
        for metric in mine.task.metrics:
            if metric != "perplexity":  # per example, lm-eval's perplexity item is the ll
                assert example[metric] == sample[metric], f"{name} doc {example['doc_id']}"
    for metric in mine.task.metrics:
        assert mine.scores[metric] == pytest.approx(
            theirs_results[f"fixture_{name}"][f"{metric},none"], rel=1e-4
        )


def test_zero_shot_matches_lm_eval(world, zero_shot):
    theirs = zero_shot
    for name in LM_EVAL_TASK_FILES:
        assert_same(ours_run(world, name), theirs["results"], theirs["samples"], name)
    # the JSON layout: every per-task key lm-eval writes, and its top-level sections
    mine = lm_eval_layout(world["ours"], [ours_run(world, "piqa")], SETTINGS)
    assert set(mine["results"]["piqa"]) == set(theirs["results"]["fixture_piqa"])
    for key in ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                "n-samples", "config", "date"):  # fmt: skip
        assert key in mine and key in theirs
    assert set(mine["n-samples"]["piqa"]) == set(theirs["n-samples"]["fixture_piqa"])


SETTINGS = {"batch_size": 3, "limit": None, "fewshot_seed": 1234, "sizes": {"piqa": 3}}


def test_few_shot_matches_lm_eval(world, harness):
    """Two solved examples drawn with lm-eval's seed and sampler, written as lm-eval writes."""
    theirs = lm_eval_run(harness, FEWSHOT_TASKS, num_fewshot=2)
    for name in FEWSHOT_TASKS:
        assert_same(ours_run(world, name, num_fewshot=2), theirs["results"], theirs["samples"],
                    name)  # fmt: skip


def test_chat_matches_lm_eval_apply_chat_template(world, harness):
    """Our chat renderer (tokenizer/encoding.py) and the export's chat template agree, and the
    requests are lm-eval's --apply_chat_template ones (few-shot examples as turns)."""
    theirs = lm_eval_run(harness, CHAT_TASKS, num_fewshot=1, apply_chat_template=True)
    for name in CHAT_TASKS:
        mine = ours_run(world, name, num_fewshot=1, chat=True)
        assert_same(mine, theirs["results"], theirs["samples"], name)


def test_a_broken_hellaswag_rule_is_caught(world, zero_shot, monkeypatch):
    """The fixtures exercise HellaSwag's cleanup: keeping WikiHow's brackets breaks parity."""
    monkeypatch.setattr(hellaswag, "preprocess", lambda text: text.strip())
    mine = ours_run(world, "hellaswag")
    with pytest.raises(AssertionError):
        assert_same(mine, zero_shot["results"], zero_shot["samples"], "hellaswag")


def test_a_broken_winogrande_rule_is_caught(world, zero_shot, monkeypatch):
    """Partial scoring: scoring the continuation without lm-eval's strip breaks parity."""
    task = all_tasks()["winogrande"]
    unstripped = dataclasses.replace(task, doc_to_target=lambda doc: doc["sentence"].split("_")[1])
    monkeypatch.setitem(TASKS, "winogrande", unstripped)
    mine = ours_run(world, "winogrande")
    with pytest.raises(AssertionError):
        assert_same(mine, zero_shot["results"], zero_shot["samples"], "winogrande")
