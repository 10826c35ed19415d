"""dataset.pre_training.download_dataset --dataset fineweb-edu: file by file, sharded, resumable.

The Hub is never contacted: a fake (tests/fineweb_fixtures.py) lists local parquet files that
have FineWeb-Edu's exact columns and several row groups each, "downloads" them by copying and
opens them "remotely" where they lie. Interruptions are real ones: kill -9 of a subprocess, a
read that breaks, a disk that fills up, Ctrl-C.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import huggingface_hub
import pyarrow.parquet as pq
import pytest
from datasets.arrow_writer import ArrowWriter
from fineweb_fixtures import (
    COMMIT,
    expected_documents,
    install_fake_hub,
    snapshot,
    write_fineweb,
)
from tokenizer_helpers import tokenize, train_tokenizer

from common.errors import UserError
from dataset.pre_training import download_dataset, fineweb_edu
from dataset.pre_training.fineweb_edu import held_out
from tokenizer.encoding import load_tokenizer
from tokenizer.tokenized_data import open_dataset

REPO = Path(__file__).resolve().parents[1]
FLAGS = [
    "--dataset",
    "fineweb-edu",
    "--config",
    "sample-10BT",
    "--shard-size-mb",
    "0.05",
    "--validation-fraction",
    "0.02",
    "--test-fraction",
    "0.02",
]
BUDGET = 60_000  # GPT-2 tokens: about 2/3 of the fixture, in ~12 shards
PROGRESS_NAME = "progress.json"


def partial_path(output: Path) -> Path:
    return output.with_name(f"{output.name}.partial")


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory) -> list[Path]:
    return write_fineweb(tmp_path_factory.mktemp("fineweb") / "sample" / "10BT")


@pytest.fixture
def hub(monkeypatch, parquet_files):
    return install_fake_hub(monkeypatch, parquet_files)


def download(output: Path, *flags) -> dict:
    argv = ["--output-dir", str(output), *FLAGS, *map(str, flags)]
    assert download_dataset.main(argv) == 0
    return json.loads((output / "manifest.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, parquet_files):
    """One uninterrupted download with --max-tokens BUDGET, to compare interrupted ones with."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        install_fake_hub(monkeypatch, parquet_files)
        output = tmp_path_factory.mktemp("reference") / "raw"
        download(output, "--max-tokens", BUDGET)
    return output


def rows(output: Path, split: str) -> list[dict]:
    return datasets.load_from_disk(str(output / split)).to_list()


# ---------------------------------------------------------------- what it writes


def test_the_files_become_a_load_from_disk_dataset_dict(reference, parquet_files, hub):
    expected = expected_documents(parquet_files)
    tokens, last = 0, 0
    while tokens < BUDGET:  # the document that reaches the budget is the last one
        tokens += expected[last]["tokens"]
        last += 1
    kept = [doc["text"] for doc in expected[:last]]
    loaded = datasets.load_from_disk(str(reference))
    assert set(loaded) == {"train", "validation", "test"}
    got = {name: [row["text"] for row in loaded[name]] for name in loaded}
    assert sorted(sum(got.values(), [])) == sorted(kept), "every kept document, once"
    assert all(row["source"] == "fineweb-edu" for split in loaded.values() for row in split)
    # held out evenly: validation takes documents 0, 50, 100, ... (fraction 0.02)
    validation = held_out(0, last, 0.02)
    assert got["validation"] == [text for text, v in zip(kept, validation) if v]
    assert got["validation"][0] == kept[0] and got["test"][0] == kept[1]
    assert got["train"] == [text for text in kept if text not in got["validation"] + got["test"]]

    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["inputs"][0] == {
        "id": fineweb_edu.REPO_ID,
        "config": "sample-10BT",
        "revision": COMMIT,
        "files": [f"sample/10BT/{path.name}" for path in parquet_files],
    }
    assert sum(split["tokens"] for split in manifest["splits"].values()) == tokens
    assert {name: s["rows"] for name, s in manifest["splits"].items()} == {
        name: len(texts) for name, texts in got.items()
    }
    assert manifest["splits"]["train"]["shards"] > 5, "written shard by shard"
    steps = {step["step"]: step for step in manifest["filters"]["fineweb-edu"]}
    assert steps["drop_missing_text"]["dropped"] > 0 and steps["drop_empty"]["dropped"] > 0
    assert steps["max_tokens"]["rows_out"] == last
    assert not partial_path(reference).exists() and not (reference / PROGRESS_NAME).exists()


def test_every_file_is_read_where_it_lies_at_the_resolved_commit(tmp_path, hub):
    """The commit is resolved once and every file is read from it; the budget ends in the
    second file, so the third is never opened. Nothing but the shards is written."""
    download(tmp_path / "raw", "--max-tokens", BUDGET)
    assert hub.calls == [
        ("dataset_info", fineweb_edu.REPO_ID, None),
        ("remote", "sample/10BT/000_00000.parquet"),
        ("remote", "sample/10BT/001_00000.parquet"),
    ]
    assert not list(tmp_path.rglob("*.parquet"))


def test_min_int_score_keeps_only_higher_scored_pages_and_counts_the_rest(
    tmp_path, parquet_files, hub
):
    manifest = download(tmp_path / "raw", "--min-int-score", 4)
    loaded = datasets.load_from_disk(str(tmp_path / "raw"))
    texts = sorted(row["text"] for split in loaded.values() for row in split)
    assert texts == sorted(doc["text"] for doc in expected_documents(parquet_files, 4))
    steps = {step["step"]: step for step in manifest["filters"]["fineweb-edu"]}
    below = steps["drop_int_score_below_4"]
    assert below["dropped"] > 100 and below["rows_out"] + below["dropped"] == below["rows_in"]
    assert "budget_not_reached" not in manifest, "no --max-tokens: the whole config"


def test_tokenizer_train_and_tokenize_take_the_result_unchanged(tmp_path, reference):
    tokenizer_path = train_tokenizer(reference, tmp_path / "tokenizer.json", vocab_size=400)
    tokenize(reference, tmp_path / "tokenized", tokenizer_path, num_proc=2)
    tokenized = open_dataset(tmp_path / "tokenized", "pre_training")
    tokenizer = load_tokenizer(tokenizer_path)
    for name, split in tokenized.items():
        texts = [row["text"] for row in rows(reference, name)]
        assert split.meta["num_documents"] == len(texts)
        for index in (0, len(texts) - 1):  # documents from the first and the last shard
            assert tokenizer.decode(split.document(index).tolist()) == texts[index]


def test_local_fineweb_shaped_files_give_the_same_documents(tmp_path, reference, parquet_files):
    """--source local on the same files gives the same documents, labelled local."""
    output = tmp_path / "raw"
    files = str(parquet_files[0].parent / "*.parquet")
    argv = [
        "--output-dir",
        str(output),
        *FLAGS[:2],
        *FLAGS[4:],
        "--source",
        "local",
        "--data-files",
        files,
        "--max-tokens",
        BUDGET,
    ]
    assert download_dataset.main(list(map(str, argv))) == 0
    for name in ("train", "validation", "test"):
        ours, hubs = rows(output, name), rows(reference, name)
        assert [r["text"] for r in ours] == [r["text"] for r in hubs]
        assert {r["source"] for r in ours} == {"local"}


def test_local_files_without_token_count_estimate_tokens_from_bytes(tmp_path):
    texts = [f"Document number {i} about photosynthesis. " * (i % 7 + 1) for i in range(40)]
    path = tmp_path / "docs.parquet"
    datasets.Dataset.from_dict({"content": texts}).to_parquet(str(path))
    argv = [
        "--output-dir",
        tmp_path / "raw",
        "--dataset",
        "fineweb-edu",
        "--source",
        "local",
        "--data-files",
        path,
        "--text-column",
        "content",
        "--validation-fraction",
        "0.1",
        "--test-fraction",
        "0.1",
    ]
    assert download_dataset.main(list(map(str, argv))) == 0
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    estimate = sum(-(-len(text.strip().encode()) // fineweb_edu.BYTES_PER_TOKEN) for text in texts)
    assert sum(split["tokens"] for split in manifest["splits"].values()) == estimate
    assert sum(split["rows"] for split in manifest["splits"].values()) == 40


# ---------------------------------------------------------------- interrupted, then resumed

KILLED_RUN = """
import sys, time
sys.path.insert(0, "tests")
from pathlib import Path
from _pytest.monkeypatch import MonkeyPatch
from fineweb_fixtures import install_fake_hub
from dataset.pre_training import download_dataset, fineweb_edu

original = fineweb_edu.Download.writer
def slow_writer(self, split):
    writer = original(self, split)
    if self.progress.shards == 4:  # shard 4 half-written: its temporary file is on disk
        print("WRITING", flush=True)
        time.sleep(120)
    return writer
fineweb_edu.Download.writer = slow_writer
install_fake_hub(MonkeyPatch(), sorted(Path(sys.argv[1]).glob("*.parquet")))
download_dataset.main(sys.argv[2:])
"""


def test_kill_9_mid_download_then_the_same_command_gives_an_identical_result(
    tmp_path, reference, parquet_files, hub
):
    output = tmp_path / "raw"
    argv = ["--output-dir", str(output), *FLAGS, "--max-tokens", str(BUDGET)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(parquet_files[0].parent), *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        for line in process.stdout:
            if line.strip() == "WRITING" or time.monotonic() > deadline:
                break
        assert process.poll() is None, "the download ended before it was killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    partial = partial_path(output)
    progress = json.loads((partial / PROGRESS_NAME).read_text())
    assert progress["shards"] == 4 and not progress["done"]
    assert list(partial.glob("*/.data-00004.arrow.tmp")), "a half-written shard"
    assert not output.exists()

    download(output, "--max-tokens", BUDGET)  # the same command
    assert snapshot(output) == snapshot(reference)
    assert not partial.exists()


def break_the_stream_once(monkeypatch, after_batches: int, error: BaseException):
    """Reading fails once, after `after_batches` batches (later reads work)."""
    original, state = pq.ParquetFile.iter_batches, {"batches": 0}

    def iter_then_fail(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            state["batches"] += 1
            if state["batches"] == after_batches + 1:
                raise error
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", iter_then_fail)


def fill_the_disk_once(monkeypatch, after_writes: int):
    original = ArrowWriter.write_table
    state = {"writes": 0}

    def write_table(self, table, *args, **kwargs):
        state["writes"] += 1
        if state["writes"] == after_writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, table, *args, **kwargs)

    monkeypatch.setattr(ArrowWriter, "write_table", write_table)


@pytest.mark.parametrize("fault", ["lost network", "full disk", "ctrl-c"])
def test_an_interrupted_download_keeps_its_shards_and_resumes_identically(
    tmp_path, reference, hub, monkeypatch, capsys, fault
):
    output = tmp_path / "raw"
    if fault == "lost network":
        break_the_stream_once(monkeypatch, 10, ConnectionError("Connection reset by peer"))
        expected = "^reading sample/10BT/000_00000.parquet failed \\(ConnectionError: Connection"
    elif fault == "full disk":
        fill_the_disk_once(monkeypatch, 10)
        expected = f"^no space left on the disk at {partial_path(output)} "
    else:
        break_the_stream_once(monkeypatch, 10, KeyboardInterrupt())
        expected = None
    with pytest.raises(KeyboardInterrupt if expected is None else UserError) as error:
        download(output, "--max-tokens", BUDGET)
    if expected is not None:
        message = str(error.value)
        assert "\n" not in message
        assert __import__("re").match(expected, message), message
        assert "finished shards stay in" in message and "the same command continues" in message
    else:
        assert "run the same command to continue" in capsys.readouterr().out
    partial = partial_path(output)
    progress = json.loads((partial / PROGRESS_NAME).read_text())
    assert progress["shards"] >= 1 and not progress["done"]
    assert not list(partial.rglob(".*.tmp")), "the unfinished shard is removed"
    assert not output.exists()

    monkeypatch.undo()
    install_fake_hub(monkeypatch, list(hub.paths.values()))
    download(output, "--max-tokens", BUDGET)
    assert "resuming" in capsys.readouterr().out
    assert snapshot(output) == snapshot(reference)


def test_resuming_with_other_settings_is_refused_until_overwrite(tmp_path, hub, monkeypatch):
    output = tmp_path / "raw"
    break_the_stream_once(monkeypatch, 10, ConnectionError("gone"))
    with pytest.raises(UserError):
        download(output, "--max-tokens", BUDGET)
    with pytest.raises(
        UserError,
        match="unfinished download with other settings: max_tokens 60000 \\(this run: 50000\\)",
    ):
        download(output, "--max-tokens", 50_000)
    manifest = download(output, "--max-tokens", 50_000, "--overwrite")
    assert sum(split["tokens"] for split in manifest["splits"].values()) >= 50_000


def test_an_existing_output_is_kept_without_overwrite_and_replaced_with_it(tmp_path, hub):
    output = tmp_path / "raw"
    download(output, "--max-tokens", 5_000)
    before = snapshot(output)
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        download(output, "--max-tokens", 9_000)
    assert snapshot(output) == before
    download(output, "--max-tokens", 9_000, "--overwrite")
    assert snapshot(output) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


# ---------------------------------------------------------------- bad input


def test_too_little_free_space_for_the_budget_is_refused_before_streaming(
    tmp_path, hub, monkeypatch
):
    monkeypatch.setattr(fineweb_edu, "free_bytes", lambda path: 1_000_000)
    with pytest.raises(UserError, match=r"needs about 0\.5 GB more .* only 0\.0 GB are free"):
        download(tmp_path / "raw", "--max-tokens", 100_000_000)
    assert [call[0] for call in hub.calls] == ["dataset_info"], "nothing downloaded"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config", "sample-1BT"], "--config 'sample-1BT' is not a FineWeb-Edu config"),
        (
            ["--max-tokens", "2e10"],
            "--max-tokens 2e\\+10 is more than FineWeb-Edu sample-10BT "
            "holds .* --config sample-100BT",
        ),
        (["--source", "sample"], "reads --source hub or --source local"),
    ],
)
def test_bad_fineweb_settings_are_one_line_errors_before_any_network(
    tmp_path, monkeypatch, flags, message
):
    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was contacted")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    with pytest.raises(UserError, match=message):
        download(tmp_path / "raw", *flags)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dataset", "fineweb-edu", "--max-tokens", "many"], "'many' is not a positive whole"),
        (["--dataset", "fineweb-edu", "--max-tokens", "-5"], "not a positive whole number"),
        (["--max-tokens", "1e9"], "--max-tokens applies to --dataset fineweb-edu only"),
        (["--dataset", "fineweb-edu", "--min-int-score", "7"], "invalid choice: 7"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, flags, message):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            download_dataset.MODULE,
            "--output-dir",
            str(tmp_path / "x"),
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_no_network_is_one_line_and_leaves_nothing_behind(tmp_path, hub, monkeypatch):
    def offline(self, repo_id, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", offline)
    expected = "^could not reach HuggingFaceFW/fineweb-edu on the Hugging Face Hub \\(Connection"
    with pytest.raises(UserError, match=expected) as error:
        download(tmp_path / "raw", "--max-tokens", 5_000)
    assert "--source local --data-files" in str(error.value)
    assert not list(tmp_path.iterdir()), "no partial download: there is nothing to resume"


def test_a_stream_too_short_for_the_held_out_splits_is_an_error(tmp_path, hub):
    with pytest.raises(UserError, match="train, validation and test each need some"):
        download(tmp_path / "raw", "--max-tokens", 50)  # two documents: no train left
