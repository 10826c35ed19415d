"""Every data and tokenizer command of the README this project grew from, exactly as written.

Its users will type these commands. Each is kept here as its text (only `/home/lucas` becomes
a temporary folder), split like a shell would, and run in-process; the Hub is a tiny fake with
the real column layouts. The original README's paths do not all agree with each other (step 2
reads `raw/train`, step 4 `pre_training/raw/test` and `tokenized/v2/test`), so the test links
those folders to what the earlier steps wrote, as its author's disk had them.
"""

import contextlib
import importlib
import io
import json
import shlex
import sys
from pathlib import Path

import datasets
import pytest

from tokenizer.tokenized_data import open_dataset

PRE_TRAINING = {
    "download": "python3 -m dataset.pre_training.download_dataset "
    "--output-dir=/home/lucas/data/v1/raw/pre_training",
    "train_tokenizer": "python3 -m tokenizer.train --dataset-dir /home/lucas/data/v1/raw/train "
    "--output-path /home/lucas/tokenizer/v1/tokenizer.json",
    "tokenize": """python3 -m tokenizer.tokenize_dataset \\
        --dataset-dir /home/lucas/data/v1/raw/pre_training \\
        --tokenizer-path /home/lucas/tokenizer/v1/tokenizer.json \\
        --output-dir /home/lucas/data/v1/tokenized/pre_training/v2 \\
        --num-proc 4""",
    "inspect": """python3 -m tokenizer.inspect_tokenized_data \\
        --raw-dataset-dir /home/lucas/data/v1/pre_training/raw/test \\
        --tokenized-dataset-dir /home/lucas/data/v1/tokenized/v2/test \\
        --tokenizer-path /home/lucas/tokenizer/v1/tokenizer.json""",
    "count": """python3 -m tokenizer.count_tokenized_data \\
        --tokenized-dir /home/lucas/data/v1/tokenized/pre_training/v2""",
}
SFT = {
    "download": "python3 -m dataset.post_training.sft.download_dataset "
    "--output-dir=/home/lucas/data/v1/raw/post_training/sft --tokenizer-profile=post_training_v1",
    "tokenize": """python3 -m tokenizer.tokenize_dataset \\
        --dataset-dir /home/lucas/data/v1/raw/post_training/sft \\
        --tokenizer-path /home/lucas/tokenizer/v1/tokenizer.json \\
        --output-dir /home/lucas/data/v1/tokenized/post_training/sft \\
        --tokenizer-profile=post_training_v1 \\
        --tokenizer-mode=post_training_sft \\
        --num-proc 4""",
    "inspect": """python3 -m tokenizer.inspect_tokenized_data \\
        --raw-dataset-dir /home/lucas/data/v1/raw/post_training/sft/train \\
        --tokenized-dataset-dir /home/lucas/data/v1/tokenized/post_training/sft/train \\
        --tokenizer-path /home/lucas/tokenizer/v1/tokenizer.json""",
    "count": """python3 -m tokenizer.count_tokenized_data \\
        --tokenized-dir /home/lucas/data/v1/tokenized/post_training/sft""",
}

STORIES = [
    f"Once upon a time, a {animal} named {name} found a {thing}. The end."
    for animal, name, thing in zip(
        ["cat", "dog", "fox", "owl"] * 10,
        ["Tom", "Lily", "Max", "Sue"] * 10,
        ["ball", "hat", "key", "cake", "kite"] * 8,
    )
]
WIKITEXT = [
    " = Rock Arsenal = \n",
    " The arsenal is a building . \n",
    "",
    " = Other = \n",
    " It has @-@ many rooms . \n",
]


def fake_hub(path, name=None, **kwargs) -> datasets.DatasetDict:
    """`datasets.load_dataset` for the three Hub datasets these commands read."""

    def table(**columns):
        return datasets.Dataset.from_dict(columns)

    if path == "roneneldan/TinyStories":
        return datasets.DatasetDict(
            {"train": table(text=STORIES[:32]), "validation": table(text=STORIES[32:])}
        )
    if path == "Salesforce/wikitext":
        return datasets.DatasetDict(
            {s: table(text=WIKITEXT) for s in ("train", "validation", "test")}
        )
    if path == "yahma/alpaca-cleaned":
        instructions = [f"Tell me about {story[:20]}" for story in STORIES]
        return datasets.DatasetDict(
            {"train": table(instruction=instructions, input=[""] * 40, output=STORIES)}
        )
    raise AssertionError(f"unexpected Hub dataset {path}")


# Where the original README reads what an earlier step wrote under another name.
LINKS = {
    "data/v1/raw/train": "data/v1/raw/pre_training/train",
    "data/v1/pre_training/raw": "data/v1/raw/pre_training",
    "data/v1/tokenized/v2": "data/v1/tokenized/pre_training/v2",
}


def run(command: str, home: Path) -> tuple[int, str]:
    """Run `python3 -m MODULE ARGS` as the shell would split it, in this process."""
    command = command.replace("\\\n", " ")  # the shell's line continuation
    argv = shlex.split(command.replace("/home/lucas", str(home)))
    assert argv[:2] == ["python3", "-m"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = importlib.import_module(argv[2]).main(argv[3:])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def readme(tmp_path_factory):
    """(home, {(section, step): (exit code, stdout) or the exception}) of every command, run in
    the README's order on one home folder."""
    home = tmp_path_factory.mktemp("home")
    for alias, target in LINKS.items():
        (home / alias).parent.mkdir(parents=True, exist_ok=True)
        (home / alias).symlink_to(home / target, target_is_directory=True)
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "load_dataset", fake_hub)  # no network
        patch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: the viewer just prints
        for section, steps in (("pre_training", PRE_TRAINING), ("sft", SFT)):
            for step, command in steps.items():
                try:
                    results[section, step] = run(command, home)
                except (Exception, SystemExit) as error:
                    results[section, step] = error
    return home, results


def result(readme, section: str, step: str) -> tuple[int, str]:
    outcome = readme[1][section, step]
    if isinstance(outcome, BaseException):
        raise outcome
    assert outcome[0] == 0, outcome[1]
    return outcome


def test_pre_training_download_as_written(readme):
    result(readme, "pre_training", "download")
    manifest = json.loads((readme[0] / "data/v1/raw/pre_training/manifest.json").read_text())
    assert manifest["source"] == "hub"
    assert {entry["id"] for entry in manifest["inputs"]} == {
        "roneneldan/TinyStories",
        "Salesforce/wikitext",
    }


def test_tokenizer_train_on_a_split_folder_as_written(readme):
    _, stdout = result(readme, "pre_training", "train_tokenizer")
    assert "trained on" in stdout and "texts of train" in stdout
    assert (readme[0] / "tokenizer/v1/tokenizer.json").is_file()


def test_pre_training_tokenize_with_num_proc_4_as_written(readme):
    _, stdout = result(readme, "pre_training", "tokenize")
    assert "wrote" in stdout
    splits = open_dataset(readme[0] / "data/v1/tokenized/pre_training/v2", "pre_training")
    assert set(splits) == {"train", "validation", "test"}


def test_pre_training_inspect_split_folders_as_written(readme):
    _, stdout = result(readme, "pre_training", "inspect")
    assert stdout.startswith("=== pre_training document 0 of ") and "OK: decodes" in stdout
    test_split = open_dataset(readme[0] / "data/v1/tokenized/pre_training/v2")["test"]
    assert f"document 0 of {test_split.meta['num_documents']} " in stdout  # the test split


def test_pre_training_count_on_the_tokenized_root_as_written(readme):
    _, stdout = result(readme, "pre_training", "count")
    assert [line.split()[0] for line in stdout.splitlines()[2:]] == [
        "train",
        "validation",
        "test",
        "total",
    ]


def test_sft_download_with_the_profile_flag_as_written(readme):
    result(readme, "sft", "download")
    manifest = readme[0] / "data/v1/raw/post_training/sft/manifest.json"
    manifest = json.loads(manifest.read_text())
    assert "tokenizer_profile" not in manifest["arguments"]  # accepted, then unused
    assert manifest["inputs"][0]["id"] == "yahma/alpaca-cleaned"


def test_sft_tokenize_with_profile_and_mode_as_written(readme):
    result(readme, "sft", "tokenize")
    train = open_dataset(readme[0] / "data/v1/tokenized/post_training/sft")["train"]
    assert train.stage == "sft" and "profile" not in train.meta and "mode" not in train.meta
    assert train.loss_mask.sum() > 0


def test_sft_inspect_split_folders_as_written(readme):
    _, stdout = result(readme, "sft", "inspect")
    assert stdout.startswith("=== sft document 0 of ") and "OK" in stdout


def test_sft_count_on_the_tokenized_root_as_written(readme):
    _, stdout = result(readme, "sft", "count")
    assert "trainable_tokens" in stdout and "total" in stdout
