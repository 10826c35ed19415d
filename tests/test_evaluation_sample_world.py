"""The sample world's multiple-choice test, and the evaluation data step that saves the tasks'
datasets (hub -> disk, then offline)."""

import json

import datasets
import pytest
import torch
from evaluation_fixtures import fixture_dataset
from tiny_tokenizer import train_tiny_tokenizer

from common.errors import UserError
from dataset.evaluation import download_dataset
from dataset.sample_world.check import mentions
from dataset.sample_world.corpus import pretraining_documents
from dataset.sample_world.multiple_choice import multiple_choice_rows
from dataset.sample_world.tasks import QUESTIONS, QuestionSpec, question_constraints
from dataset.sample_world.world import build_world
from evaluation import data
from evaluation.models import CheckpointModel
from evaluation.runner import run_task
from evaluation.tasks import all_tasks
from model.config import from_preset
from model.transformer import Transformer


def test_every_item_has_one_right_choice_that_a_program_knows():
    world = build_world(0)
    rows = multiple_choice_rows(0, "test")
    assert len(rows) == len(world.characters) * (len(QUESTIONS) + 1)
    answers = [row["answer"] for row in rows]
    assert min(answers.count(i) for i in range(4)) > 40  # the right one is anywhere
    for row in rows:
        assert len(row["choices"]) == len(set(row["choices"])) == 4
        character = world.character(row["character"])
        if row["kind"] == "story":
            right = character.object
            assert mentions(row["question"], right)  # the story says what was lost
        else:
            right = question_constraints(world, QuestionSpec(character, row["kind"]))["include"][0]
        holding = [i for i, choice in enumerate(row["choices"]) if mentions(choice, right)]
        assert holding == [row["answer"]], row
    # the few-shot split asks about the same facts with other draws
    train = multiple_choice_rows(0, "train")
    assert [r["character"] for r in train] == [r["character"] for r in rows]
    assert [r["choices"] for r in train] != [r["choices"] for r in rows]
    assert multiple_choice_rows(0, "test") == rows  # deterministic


def test_an_untrained_model_scores_at_chance(tmp_path):
    texts = [text for text, _ in pretraining_documents(0, "train", 200_000)]
    tokenizer_path = train_tiny_tokenizer(tmp_path / "tokenizer.json", texts, 512)
    from tokenizer.encoding import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    torch.manual_seed(0)
    model = Transformer(from_preset("debug", vocab_size=tokenizer.get_vocab_size(), block_size=256))
    scored = CheckpointModel(model.eval(), tokenizer, "untrained", "pre_training",
                             torch.device("cpu"), bf16=False)  # fmt: skip
    task = all_tasks()["sample_world"]
    generated = data.load_dataset_dict("sample_world", tmp_path)  # no copy there: generated
    docs, _, size = data.task_docs(task, generated, limit=None, with_fewshot=False)
    result = run_task(scored, task, docs, batch_size=64, progress=False)
    assert size == 280 and result.baseline["acc"] == 0.25
    for metric in ("acc", "acc_norm"):  # 280 items: one standard error is about 2.6 points
        assert abs(result.scores[metric] - 0.25) < 4 * result.stderrs[metric], result.scores
    # as a chat model, through the chat renderer, it is no better
    chat = run_task(scored, task, docs, chat=True, batch_size=64, progress=False)
    assert abs(chat.scores["acc"] - 0.25) < 4 * chat.stderrs["acc"]


def test_sample_source_writes_the_test_and_keeps_it(tmp_path, capsys):
    assert download_dataset.main(["--output-dir", str(tmp_path), "--source", "sample"]) == 0
    folder = tmp_path / "sample_world"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"]["test"]["rows"] == 280 and manifest["inputs"][0]["seed"] == 0
    saved = data.load_dataset_dict("sample_world", tmp_path)
    assert saved["test"].to_list() == multiple_choice_rows(0, "test")
    (folder / "marker").write_text("kept")
    download_dataset.main(["--output-dir", str(tmp_path), "--source", "sample"])
    assert "already there, kept" in capsys.readouterr().out and (folder / "marker").exists()
    download_dataset.main(["--output-dir", str(tmp_path), "--source", "sample", "--overwrite"])
    assert not (folder / "marker").exists()


def test_hub_source_keeps_the_tasks_splits(tmp_path, monkeypatch):
    """hub -> disk: the Hub's DatasetDict (here a fixture with the real columns) is saved with
    the splits the tasks read, and read back offline."""
    hub = fixture_dataset("arc_easy")
    hub["validation"] = hub["train"]  # a split the task does not read: left out
    asked = []

    def fake_load_hub(repo_id, **kwargs):
        asked.append((repo_id, kwargs.get("name")))
        return hub

    monkeypatch.setattr(download_dataset, "load_hub", fake_load_hub)
    download_dataset.main(["--output-dir", str(tmp_path), "--datasets", "arc_easy"])
    assert asked == [("allenai/ai2_arc", "ARC-Easy")]
    saved = data.load_dataset_dict("arc_easy", tmp_path, download=False)
    assert sorted(saved) == ["test", "train"] and saved["test"].to_list() == hub["test"].to_list()
    manifest = json.loads((tmp_path / "arc_easy" / "manifest.json").read_text())
    assert manifest["inputs"][0]["id"] == "allenai/ai2_arc"
    # a Hub copy that lost a split is a one-line error, and nothing is written
    monkeypatch.setattr(download_dataset, "load_hub", lambda *a, **k: {"train": hub["train"]})
    with pytest.raises(UserError, match="has no split validation"):
        download_dataset.main(["--output-dir", str(tmp_path), "--datasets", "piqa"])
    assert not (tmp_path / "piqa").exists()


def test_bad_data_is_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown dataset"):
        download_dataset.main(["--output-dir", str(tmp_path), "--datasets", "mmlu"])
    with pytest.raises(UserError, match="writes only sample_world"):
        download_dataset.main(["--output-dir", str(tmp_path), "--source", "sample",
                               "--datasets", "piqa"])  # fmt: skip
    # a folder that holds another dataset is named, with what to do
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": ["a"]}),
                          "train": datasets.Dataset.from_dict({"text": ["b"]})}).save_to_disk(
        str(tmp_path / "piqa"))  # fmt: skip
    with pytest.raises(UserError, match="no column goal"):
        data.load_dataset_dict("piqa", tmp_path)
    (tmp_path / "hellaswag").mkdir()
    with pytest.raises(UserError, match="not a saved dataset"):
        data.load_dataset_dict("hellaswag", tmp_path)
    with pytest.raises(UserError, match="not found; run"):
        data.load_dataset_dict("winogrande", tmp_path, download=False)


def test_models_the_sample_pipeline_trains_score_far_above_chance(tmp_path, capsys):
    """The pipeline of tests/post_training_fixtures.py (0.4M parameters, cached per process),
    scored by the real command: pre-training learns the world's facts, SFT and DPO keep them.
    Measured: pre-trained 44.3 ± 3.0, SFT 49.6 ± 3.0, DPO 42.9 ± 3.0 (acc, %); chance is 25."""
    from post_training_fixtures import dpo_checkpoint, pretrained_checkpoint, sft_checkpoint

    from evaluation.cli import main

    stages = {"pre_training": pretrained_checkpoint(), "sft": sft_checkpoint(),
              "dpo": dpo_checkpoint()}  # fmt: skip
    argv = [arg for path in stages.values() for arg in ("--checkpoint", str(path))]
    capsys.readouterr()
    assert main([*argv, "--tasks", "sample_world", "--json", str(tmp_path / "r.json"),
                 "--data-dir", str(tmp_path), "--quiet"]) == 0  # fmt: skip
    print(capsys.readouterr().out)
    for stage, path in stages.items():
        layout = json.loads((tmp_path / f"r.{path.name}.json").read_text())
        scores = layout["results"]["sample_world"]
        assert layout["config"]["apply_chat_template"] is (stage != "pre_training")
        acc, stderr = scores["acc,none"], scores["acc_stderr,none"]
        assert acc > 0.25 + 4 * stderr, (stage, acc, stderr)  # chance is 25%, stderr ~3 points
