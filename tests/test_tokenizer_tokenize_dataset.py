"""tokenize_dataset: exact round trip, identical output for any --num-proc, SFT masks, the DPO
truncation policy, atomic output (Ctrl-C included), the original README's spellings of --stage
and every bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tokenizer_helpers import (
    CONVERSATIONS,
    PAIRS,
    REPO,
    STORIES,
    all_stages_tokenizer,
    dpo_dataset,
    pair,
    pre_training_dataset,
    run_cli,
    run_main,
    save_splits,
    sft_dataset,
    tokenize,
)

from common.errors import UserError
from tokenizer import tokenize_dataset
from tokenizer.encoding import load_tokenizer
from tokenizer.tokenized_data import open_dataset, open_split


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return all_stages_tokenizer(tmp_path_factory.mktemp("tok"))


def sft(raw, out, tokenizer_path, *extra):
    return tokenize(raw, out, tokenizer_path, "--stage", "sft", *extra)


def dpo(raw, out, tokenizer_path, *extra):
    return tokenize(raw, out, tokenizer_path, "--stage", "dpo", *extra)


def parse(*argv):
    return tokenize_dataset.parse_args(
        ["--dataset-dir", "raw", "--tokenizer-path", "t.json", "--output-dir", "out", *argv]
    )


@pytest.mark.parametrize(
    "argv, stage",
    [
        ([], "pre_training"),
        (["--tokenizer-mode=pre_training", "--tokenizer-profile=pre_training"], "pre_training"),
        (["--tokenizer-profile=post_training_v1", "--tokenizer-mode=post_training_sft"], "sft"),
        (["--tokenizer-mode", "post_training_dpo"], "dpo"),
        (["--stage", "dpo", "--tokenizer-profile", "post_training_v1"], "dpo"),
        (["--stage", "sft", "--tokenizer-mode", "post_training_sft"], "sft"),
    ],
)
def test_the_original_readme_spellings_name_the_stage(argv, stage):
    args = parse(*argv)
    assert args.stage == stage
    assert not hasattr(args, "tokenizer_mode") and not hasattr(args, "tokenizer_profile")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--tokenizer-mode", "post_training_sft", "--tokenizer-profile", "pre_training"],
            "--tokenizer-profile pre_training goes with --stage pre_training, not --stage sft",
        ),
        (
            ["--tokenizer-profile", "post_training_v1"],
            "--tokenizer-profile post_training_v1 goes with --stage sft or dpo, not --stage "
            "pre_training",
        ),
        (
            ["--stage", "pre_training", "--tokenizer-profile", "post_training_v1"],
            "--tokenizer-profile post_training_v1 goes with --stage sft or dpo, not --stage "
            "pre_training",
        ),
        (
            ["--stage", "dpo", "--tokenizer-mode", "post_training_sft"],
            "--tokenizer-mode post_training_sft means --stage sft, not --stage dpo",
        ),
    ],
)
def test_contradicting_spellings_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"error: {message}; ")
    assert err.count("\n") == 1, err


def test_help_names_the_older_spellings(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--stage {pre_training,sft,dpo}" in help_text
    assert "older spelling of --stage" in help_text and "older flag" in help_text


def test_pre_training_arrays_decode_back_to_the_raw_text(tmp_path, tokenizer_path):
    raw = pre_training_dataset(tmp_path / "raw", copies=2)
    tokenize(raw, tmp_path / "out", tokenizer_path, "--batch-size", 3)
    tokenizer = load_tokenizer(tokenizer_path)
    splits = open_dataset(tmp_path / "out", "pre_training")
    assert set(splits) == {"train", "validation", "test"}
    train = splits["train"]
    kept = [t for t in STORIES if t] * 2
    assert train.meta["num_documents"] == len(kept)
    assert train.meta["stats"]["skipped_empty"] == 2 and train.meta["stats"]["rows_in"] == 14
    assert train.meta["tokenizer_sha256"] and train.meta["stage"] == "pre_training"
    for index, text in enumerate(kept):
        doc = train.document(index).tolist()
        assert doc == tokenizer.document(text)
        assert tokenizer.decode(doc[1:], skip_special_tokens=False) == text
    rows = np.fromfile(tmp_path / "out" / "train" / "source_rows.bin", np.uint64).tolist()
    assert rows == [i for i, t in enumerate(STORIES * 2) if t]


def test_num_proc_1_and_2_give_identical_bytes(tmp_path, tokenizer_path):
    texts = [f"{story} Number {i}." for i, story in enumerate(STORIES * 40)]
    raw = pre_training_dataset(tmp_path / "raw", texts, copies=1)
    for num_proc in (1, 2):
        tokenize(
            raw, tmp_path / f"out{num_proc}", tokenizer_path, "--batch-size", 16, num_proc=num_proc
        )
    files = sorted(p.relative_to(tmp_path / "out1") for p in (tmp_path / "out1").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "out2") for p in (tmp_path / "out2").rglob("*"))
    for name in files:
        if (tmp_path / "out1" / name).is_file():
            assert (tmp_path / "out1" / name).read_bytes() == (
                tmp_path / "out2" / name
            ).read_bytes()


def test_sft_mask_is_exactly_assistant_content_and_turn_end(tmp_path, tokenizer_path):
    tokenize_args = (sft_dataset(tmp_path / "raw"), tmp_path / "out", tokenizer_path)
    sft(*tokenize_args)
    tokenizer = load_tokenizer(tokenizer_path)
    split = open_split(tmp_path / "out" / "train", "sft")
    trainable = 0
    for index, messages in enumerate(CONVERSATIONS):
        start, end = split.doc_offsets[index], split.doc_offsets[index + 1]
        ids, mask = split.tokens[start:end].tolist(), split.loss_mask[start:end].tolist()
        assert (ids, mask) == tokenizer.conversation(messages)
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        trained = [i for i, m in zip(ids, mask) if m]
        assert trained == sum((tokenizer.reply([], r) for r in replies), [])
        trainable += len(trained)
    assert split.meta["stats"]["trainable_tokens"] == trainable
    assert split.meta["stage"] == "sft"


def test_sft_overlong_truncated_or_dropped_and_counted(tmp_path, tokenizer_path):
    tokenizer = load_tokenizer(tokenizer_path)
    long_prompt = [
        {"role": "user", "content": "word " * 60},
        {"role": "assistant", "content": "Yes."},
    ]
    long_reply = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "ok " * 60}]
    no_assistant = [{"role": "user", "content": "Hello?"}]
    malformed = [{"role": "robot", "content": "beep"}]
    short = CONVERSATIONS[0]
    raw = sft_dataset(tmp_path / "raw", [long_prompt, long_reply, no_assistant, malformed, short])
    sft(raw, tmp_path / "cut", tokenizer_path, "--max-length", 20)
    split = open_split(tmp_path / "cut" / "train")
    stats = split.meta["stats"]
    assert stats["dropped_no_trainable_token_after_truncation"] == 1  # the prompt fills 20 tokens
    assert stats["truncated"] == 1 and stats["dropped_no_assistant_turn"] == 1
    assert stats["skipped_malformed"] == 1 and split.meta["num_documents"] == 2
    assert stats["max_length"] == 20 and stats["overlong"] == "truncate"
    first = split.tokens[split.doc_offsets[0] : split.doc_offsets[1]].tolist()
    assert first == tokenizer.conversation(long_reply)[0][:20]
    assert np.fromfile(tmp_path / "cut" / "train" / "source_rows.bin", np.uint64).tolist() == [1, 4]

    sft(raw, tmp_path / "drop", tokenizer_path, "--max-length", 20, "--overlong", "drop")
    stats = open_split(tmp_path / "drop" / "train").meta["stats"]
    assert stats["dropped_overlong"] == 2 and stats["documents"] == 1


def test_dpo_spans_match_the_chat_format(tmp_path, tokenizer_path):
    dpo(dpo_dataset(tmp_path / "raw"), tmp_path / "out", tokenizer_path)
    tokenizer = load_tokenizer(tokenizer_path)
    split = open_split(tmp_path / "out" / "validation", "dpo")
    assert split.pair_offsets.shape == (len(PAIRS), 4)
    for (p, c, r, e), row in zip(split.pair_offsets.tolist(), PAIRS):
        assert split.tokens[p:c].tolist() == tokenizer.prompt(row["prompt"])
        assert split.tokens[c:r].tolist() == tokenizer.reply([], row["chosen"][0]["content"])
        assert split.tokens[r:e].tolist() == tokenizer.reply([], row["rejected"][0]["content"])


def test_dpo_truncation_policy(tmp_path, tokenizer_path):
    tokenizer = load_tokenizer(tokenizer_path)
    long_question = "Where does the dog live? " * 3
    rows = [
        pair(long_question, "Yes it is.", "No way."),  # prompt cut to its end
        pair("Hi", "ok " * 40, "no " * 5),  # responses cut to the room left
        pair("x " * 80, "A", "B"),  # the prompt alone fills the context: dropped
        pair("Same?", "Same answer.", "Same answer."),  # identical: dropped
        pair("Hi", "ok " * 40, "ok " * 41),  # identical once truncated: dropped
        {"prompt": [], "chosen": [], "rejected": []},  # malformed: skipped
        PAIRS[2],  # fits untouched
    ]
    raw = dpo_dataset(tmp_path / "raw", rows)
    dpo(raw, tmp_path / "out", tokenizer_path, "--max-length", 32, "--max-prompt-length", 12)
    split = open_split(tmp_path / "out" / "train")
    stats = split.meta["stats"]
    assert stats["pairs_in"] == 7 and stats["pairs"] == 3 and split.meta["num_documents"] == 3
    assert stats["prompts_truncated"] == 1 and stats["responses_truncated"] == 1
    assert stats["dropped_prompt_fills_context"] == 1 and stats["dropped_identical"] == 2
    assert stats["skipped_malformed"] == 1
    assert np.fromfile(tmp_path / "out" / "train" / "source_rows.bin", np.uint64).tolist() == [
        0,
        1,
        6,
    ]
    spans = [
        [split.tokens[a:b].tolist() for a, b in zip(row[:-1], row[1:])]
        for row in split.pair_offsets.tolist()
    ]
    full_prompt = tokenizer.prompt(rows[0]["prompt"])
    full_chosen = tokenizer.reply([], "Yes it is.")
    assert 12 < len(full_prompt) < 32 < len(full_prompt) + len(full_chosen)
    assert len(full_chosen) <= 32 - 12
    assert spans[0][0] == [0] + full_prompt[-11:]  # leading <|endoftext|> + the prompt's end
    assert spans[0][0][-1] == 4 and len(spans[0][0]) == 12
    assert spans[0][1] == full_chosen  # fits after the cut
    prompt, chosen, rejected = spans[1]
    assert len(prompt) + len(chosen) == 32 and chosen[-1] != 5  # cut: no <|end|>
    assert rejected == tokenizer.reply([], "no " * 5)
    assert spans[2] == [
        tokenizer.prompt(PAIRS[2]["prompt"]),
        tokenizer.reply([], "Hi!"),
        tokenizer.reply([], "Goodbye."),
    ]
    for row in split.pair_offsets.tolist():
        assert row[3] - row[0] - min(row[2] - row[1], row[3] - row[2]) <= 32

    dpo(raw, tmp_path / "drop", tokenizer_path, "--max-length", 32, "--overlong", "drop")
    stats = open_split(tmp_path / "drop" / "train").meta["stats"]
    assert stats["dropped_overlong"] == 3 and stats["pairs"] == 1


def test_bad_inputs_are_one_line_errors(tmp_path, tokenizer_path):
    raw = pre_training_dataset(tmp_path / "raw")

    def fails(message, *argv, raw=raw, tokenizer=tokenizer_path):
        base = [
            "--dataset-dir",
            raw,
            "--tokenizer-path",
            tokenizer,
            "--output-dir",
            tmp_path / "out",
            "--num-proc",
            1,
        ]
        with pytest.raises(UserError, match=message):
            run_main(tokenize_dataset.main, base + list(argv))

    fails("not found", raw=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    fails("is empty", raw=tmp_path / "empty")
    fails("single split folder", raw=raw / "train")
    fails(r"sft data needs 'messages'.*check --stage", "--stage", "sft")
    save_splits(tmp_path / "no_text", {"train": {"body": ["x"]}})
    fails(r"pre_training data needs 'text'.*missing \['text'\]", raw=tmp_path / "no_text")
    not_tokenizer = tmp_path / "tokenizer.json"
    not_tokenizer.write_text("this is not json")
    fails("not a Hugging Face tokenizer", tokenizer=not_tokenizer)
    (tmp_path / "out").mkdir()
    fails("already exists; pass --overwrite")
    for argv in (
        ["--max-length", 10],
        ["--stage", "dpo", "--max-length", 10, "--max-prompt-length", 10],
        ["--num-proc", 0],
    ):
        with pytest.raises(SystemExit):
            run_main(
                tokenize_dataset.main,
                [
                    "--dataset-dir",
                    raw,
                    "--tokenizer-path",
                    tokenizer_path,
                    "--output-dir",
                    tmp_path / "x",
                    *argv,
                ],
            )
    result = run_cli(
        "tokenizer.tokenize_dataset",
        "--dataset-dir",
        raw,
        "--tokenizer-path",
        not_tokenizer,
        "--output-dir",
        tmp_path / "y",
        "--num-proc",
        1,
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert result.stderr.strip().count("\n") == 0


def test_overwrite_replaces_a_finished_output(tmp_path, tokenizer_path):
    raw = pre_training_dataset(tmp_path / "raw")
    tokenize(raw, tmp_path / "out", tokenizer_path)
    (tmp_path / "out" / "stale").write_text("old")
    tokenize(raw, tmp_path / "out", tokenizer_path, "--overwrite")
    assert not (tmp_path / "out" / "stale").exists()
    assert open_dataset(tmp_path / "out")["train"].meta["num_documents"] == 18


def test_interrupt_mid_write_leaves_nothing_finished(tmp_path, tokenizer_path, monkeypatch):
    raw = pre_training_dataset(tmp_path / "raw", copies=10)
    calls = []
    original = tokenize_dataset.encode_batch

    def interrupted(first_row, batch):
        calls.append(first_row)
        if len(calls) == 3:  # two batches are already written to the temporary folder
            raise KeyboardInterrupt
        return original(first_row, batch)

    monkeypatch.setattr(tokenize_dataset, "encode_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tokenize(raw, tmp_path / "out", tokenizer_path, "--batch-size", 5)
    assert len(calls) == 3
    assert list(tmp_path.glob("out*")) == []


def test_ctrl_c_to_a_running_cli_leaves_nothing_finished(tmp_path, tokenizer_path):
    texts = [f"{story} {i}" for i, story in enumerate(STORIES * 3000)]
    raw = pre_training_dataset(tmp_path / "raw", texts, copies=1)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenizer.tokenize_dataset",
            "--dataset-dir",
            str(raw),
            "--tokenizer-path",
            str(tokenizer_path),
            "--output-dir",
            str(tmp_path / "out"),
            "--num-proc",
            "2",
            "--batch-size",
            "10",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a job in a terminal
    )
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("out.tmp-*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    time.sleep(0.3)  # inside the run: workers starting or encoding
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole group, workers too
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.glob("out*")) == []


def test_meta_json_counts_and_summary(tmp_path, tokenizer_path):
    raw = pre_training_dataset(tmp_path / "raw")
    stdout = tokenize(raw, tmp_path / "out", tokenizer_path)
    meta = json.loads((tmp_path / "out" / "train" / "meta.json").read_text())
    assert meta["num_tokens"] == meta["arrays"]["tokens.bin"]["bytes"] // 2
    assert meta["stats"]["documents"] == meta["num_documents"] == 18
    assert "train: 18 documents" in stdout and "tokens/s" in stdout
