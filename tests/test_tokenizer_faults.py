"""tokenize_dataset and tokenizer.train against real faults and careless input: two runs on one
--output-dir, a full disk, the leftovers of a killed run, and a `text` column that is not text.
Each ends in one line and a non-zero exit, and a finished output is never lost."""

import errno
import os
import subprocess

import pytest
from tokenizer_helpers import (
    STORIES,
    all_stages_tokenizer,
    kill_when,
    pre_training_dataset,
    run_cli,
    run_main,
    save_splits,
    start_cli,
    tokenize,
)

from common.errors import UserError
from common.locking import folder_lock
from tokenizer import tokenize_dataset, tokenized_data, train
from tokenizer.tokenized_data import open_dataset


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return all_stages_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return pre_training_dataset(tmp_path_factory.mktemp("raw") / "raw")


def tokenize_cli(raw, out, tokenizer_path, *extra) -> subprocess.CompletedProcess:
    return run_cli(
        "tokenizer.tokenize_dataset",
        "--dataset-dir",
        raw,
        "--tokenizer-path",
        tokenizer_path,
        "--output-dir",
        out,
        "--num-proc",
        1,
        *extra,
        timeout=300,
    )


def test_a_second_run_on_the_same_output_names_the_first(tmp_path, raw, tokenizer_path):
    out = tmp_path / "out"
    with folder_lock(out, what="tokenize output"):
        result = tokenize_cli(raw, out, tokenizer_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert f"error: {out} is in use: process {os.getpid()} holds its lock" in line
    assert "tokenize output" in line
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_one_line_and_keeps_the_previous_output(
    tmp_path, raw, tokenizer_path, monkeypatch
):
    out = tmp_path / "out"
    tokenize(raw, out, tokenizer_path)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    writes = []
    write_array = tokenized_data.write_array

    def fills_the_disk(file, values, dtype):
        writes.append(file.name)
        if len(writes) == 3:  # a few arrays are partly written by now
            raise OSError(errno.ENOSPC, "No space left on device")
        write_array(file, values, dtype)

    monkeypatch.setattr(tokenized_data, "write_array", fills_the_disk)
    with pytest.raises(UserError, match=f"^no space left on the disk at {out} ") as error:
        tokenize(raw, out, tokenizer_path, "--overwrite")
    assert "\n" not in str(error.value) and len(writes) == 3
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path, tokenizer_path):
    texts = [f"{story} {i}" for i, story in enumerate(STORIES * 3000)]
    raw = pre_training_dataset(tmp_path / "raw", texts, copies=1)
    out = tmp_path / "out"
    process = start_cli(
        "tokenizer.tokenize_dataset",
        "--dataset-dir",
        raw,
        "--tokenizer-path",
        tokenizer_path,
        "--output-dir",
        out,
        "--num-proc",
        1,
        "--batch-size",
        10,
    )
    kill_when(process, lambda: list(tmp_path.glob("out.tmp-*/train/tokens.bin")))
    leftover = tmp_path / f"out.tmp-{process.pid}"
    assert leftover.is_dir() and not out.exists()

    small = pre_training_dataset(tmp_path / "small")
    stdout = tokenize(small, out, tokenizer_path)
    assert f"removed {leftover}, left behind by an interrupted run" in stdout
    assert not leftover.exists() and open_dataset(out)["train"].meta["num_documents"] == 18


@pytest.mark.parametrize(
    "columns, stage, message",
    [
        ({"text": [1, 2, 3]}, "pre_training", "column 'text' holds int64 values, not strings"),
        ({"text": [[1.5], [2.5]]}, "pre_training", "column 'text' holds list<item: double>"),
        ({"messages": ["hi", "yo"]}, "sft", "'messages' holds string values"),
        (
            {"prompt": [[{"role": "user", "content": 1}]], "chosen": [[]], "rejected": [[]]},
            "dpo",
            "'prompt' holds list<item: struct<role: string, content: int64>>",
        ),
    ],
)
def test_a_column_of_the_wrong_type_is_an_error_not_zero_tokens(
    tmp_path, tokenizer_path, columns, stage, message
):
    raw = save_splits(tmp_path / "raw", {"train": columns})
    argv = ["--dataset-dir", raw, "--tokenizer-path", tokenizer_path, "--output-dir"]
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        run_main(tokenize_dataset.main, [*argv, tmp_path / "out", "--stage", stage])
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        run_main(train.main, ["--dataset-dir", raw, "--output-path", tmp_path / "t.json"])
