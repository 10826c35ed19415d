"""The sample world's multiple-choice test (an lm-eval task: dataset/evaluation/tasks/
sample_world.yaml), and the evaluation data step that copies what tasks read (then offline)."""

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
from evaluation.lm import SimpleTransformerLM
from evaluation.tasks import evaluate_tasks, load_tasks
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
    lm = SimpleTransformerLM(model.eval(), tokenizer, batch_size=64)
    tasks, _ = load_tasks(["sample_world"], tmp_path)  # no copy there: generated
    for chat in (False, True):  # as a chat model, through the chat template, no better
        results = evaluate_tasks(lm, tasks, chat=chat)
        scores, samples = results["results"]["sample_world"], results["samples"]["sample_world"]
        assert len(samples) == 280 and all(len(s["arguments"]) == 4 for s in samples)
        for metric in ("acc", "acc_norm"):  # 280 items: one standard error is about 2.6 points
            assert abs(scores[f"{metric},none"] - 0.25) < 4 * scores[f"{metric}_stderr,none"]


def test_the_data_step_writes_the_sample_test_and_keeps_it(tmp_path, capsys):
    argv = ["--output-dir", str(tmp_path), "--tasks", "sample_world"]
    assert download_dataset.main(argv) == 0
    folder = tmp_path / "sample_world" / "default"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"] == {"train": 280, "test": 280} and manifest["seed"] == 0
    assert datasets.load_from_disk(folder)["test"].to_list() == multiple_choice_rows(0, "test")
    (folder / "marker").write_text("kept")
    download_dataset.main(argv)
    assert "already there, kept" in capsys.readouterr().out and (folder / "marker").exists()
    download_dataset.main([*argv, "--overwrite", "--seed", "1"])
    assert not (folder / "marker").exists()
    assert json.loads((folder / "manifest.json").read_text())["seed"] == 1


def test_the_data_step_copies_what_the_tasks_read(tmp_path, monkeypatch):
    """hub -> disk: each dataset the named tasks load is fetched once (ARC's two tasks, two
    configs), saved whole, and read back offline by the evaluation."""
    asked = []

    def fake_hub(path, name=None, **kwargs):
        asked.append((path, name))
        return fixture_dataset({"ARC-Easy": "arc_easy", "ARC-Challenge": "arc_challenge"}[name])

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    download_dataset.main(["--output-dir", str(tmp_path), "--tasks", "arc_easy,arc_challenge"])
    download_dataset.main(["--output-dir", str(tmp_path), "--tasks", "arc_easy_letters"])
    assert asked == [("allenai/ai2_arc", "ARC-Easy"), ("allenai/ai2_arc", "ARC-Challenge")]
    manifest = json.loads((tmp_path / "allenai/ai2_arc/ARC-Easy/manifest.json").read_text())
    assert manifest["id"] == "allenai/ai2_arc" and manifest["name"] == "ARC-Easy"
    assert manifest["splits"]["test"] == 4 and "revision" in manifest
    monkeypatch.undo()  # offline again
    tasks, missing = load_tasks(["arc_easy", "arc_easy_letters"], tmp_path)
    assert missing == [] and len(tasks["tasks"]["arc_easy"].test_docs()) == 4


def test_bad_data_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="unknown task 'hellaswg'; closest: hellaswag"):
        download_dataset.main(["--output-dir", str(tmp_path), "--tasks", "hellaswg"])
    folder = tmp_path / "baber" / "piqa" / "default"
    folder.mkdir(parents=True)  # a folder that is not a saved dataset
    with pytest.raises(UserError, match="is not a saved dataset.*--overwrite"):
        load_tasks(["piqa"], tmp_path)

    def outage(path, name=None, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", outage)
    with pytest.raises(UserError, match="could not fetch Rowan/hellaswag .*no route to host"):
        download_dataset.main(["--output-dir", str(tmp_path), "--tasks", "hellaswag"])
    assert not (tmp_path / "Rowan" / "hellaswag" / "default").exists()


def test_models_the_sample_pipeline_trains_score_far_above_chance(tmp_path, capsys):
    """The pipeline of tests/post_training_fixtures.py (0.4M parameters, cached per process),
    scored by the real command: pre-training learns the world's facts, SFT and DPO keep them.
    Measured: pre-trained 44.3 ± 3.0, SFT 49.6 ± 3.0, DPO 42.9 ± 3.0 (acc, %); chance is 25."""
    from post_training_fixtures import dpo_checkpoint, pretrained_checkpoint, sft_checkpoint

    from evaluation.cli import main

    stages = {
        "pre_training": pretrained_checkpoint(),
        "sft": sft_checkpoint(),
        "dpo": dpo_checkpoint(),
    }
    argv = [arg for path in stages.values() for arg in ("--checkpoint", str(path))]
    capsys.readouterr()
    assert (
        main(
            [
                *argv,
                "--tasks",
                "sample_world",
                "--json",
                str(tmp_path / "r.json"),
                "--data-dir",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    print(capsys.readouterr().out)
    for stage, path in stages.items():
        layout = json.loads((tmp_path / f"r.{path.name}.json").read_text())
        scores = layout["results"]["sample_world"]
        assert layout["config"]["apply_chat_template"] is (stage != "pre_training")
        acc, stderr = scores["acc,none"], scores["acc_stderr,none"]
        assert acc > 0.25 + 4 * stderr, (stage, acc, stderr)  # chance is 25%, stderr ~3 points
