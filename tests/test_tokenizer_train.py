"""tokenizer.train: special ids, exact Unicode round trip, budgets, and its bad inputs."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizer_helpers import (
    STORIES,
    corpus_for_tokenizer,
    dpo_dataset,
    pre_training_dataset,
    run_cli,
    run_main,
    save_splits,
    sft_dataset,
)

from common.errors import UserError
from tokenizer import train
from tokenizer.encoding import SPECIAL_TOKENS, load_tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(tokenizer, stdout) of one CLI run on the test corpus, vocab 512."""
    folder = tmp_path_factory.mktemp("train")
    corpus_for_tokenizer(folder / "raw")
    result = run_cli(
        "tokenizer.train",
        "--dataset-dir",
        folder / "raw",
        "--output-path",
        folder / "out" / "tokenizer.json",
        "--vocab-size",
        512,
    )
    assert result.returncode == 0, result.stderr
    return load_tokenizer(folder / "out" / "tokenizer.json"), result.stdout


def test_cli_reserves_special_tokens_and_reports(trained):
    tokenizer, stdout = trained
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(6))
    assert tokenizer.get_vocab_size() <= 512
    for expected in (
        "vocab size:",
        '"<|end|>": 5',
        "training time:",
        "bytes per token on validation",
    ):
        assert expected in stdout
    # Every byte has its own token, so nothing can ever be unknown.
    assert tokenizer.get_vocab_size() >= len(SPECIAL_TOKENS) + 256


def test_pre_tokenizer_is_gpt4_style(trained):
    tokenizer, _ = trained
    pieces = [p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str("I'm 12345 cats!!\n\nOk")]
    # contractions split off, digits in groups of at most 3, punctuation keeps its newlines
    assert pieces == ["I", "'m", "Ġ", "123", "45", "Ġcats", "!!ĊĊ", "Ok"]


def test_text_that_looks_special_is_plain(trained):
    tokenizer, _ = trained
    for text in ("<|end|>", "hi <|endoftext|><|user|>", "<|assistant|>"):
        ids = tokenizer.document(text)
        assert ids[0] == 0 and min(ids[1:]) >= len(SPECIAL_TOKENS)
        assert tokenizer.decode(ids[1:], skip_special_tokens=False) == text


unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
with_specials = st.builds(
    lambda a, special, b: a + special + b,
    unicode_text,
    st.sampled_from(SPECIAL_TOKENS + ["<|", "|>", "<|end"]),
    unicode_text,
)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(unicode_text, with_specials))
def test_any_unicode_round_trips_exactly(trained, text):
    tokenizer, _ = trained
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert all(i >= len(SPECIAL_TOKENS) for i in ids)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_training_is_deterministic_and_respects_max_chars(tmp_path):
    pre_training_dataset(tmp_path / "raw", copies=20)
    outputs = []
    for name in ("a.json", "b.json"):
        code, stdout = run_main(
            train.main,
            [
                "--dataset-dir",
                tmp_path / "raw",
                "--output-path",
                tmp_path / name,
                "--vocab-size",
                300,
                "--max-chars",
                500,
            ],
        )
        assert code == 0
        outputs.append((tmp_path / name).read_text())
    assert outputs[0] == outputs[1]
    assert "trained on 500 characters" in stdout


def test_accepts_one_split_folder_and_chat_datasets(tmp_path):
    pre_training_dataset(tmp_path / "raw")
    code, stdout = run_main(
        train.main,
        [
            "--dataset-dir",
            tmp_path / "raw" / "train",
            "--output-path",
            tmp_path / "t.json",
            "--vocab-size",
            300,
        ],
    )
    assert code == 0 and "bytes per token on train" in stdout
    sft_dataset(tmp_path / "sft")
    dpo_dataset(tmp_path / "dpo")
    for name in ("sft", "dpo"):
        code, stdout = run_main(
            train.main,
            [
                "--dataset-dir",
                tmp_path / name,
                "--output-path",
                tmp_path / f"{name}.json",
                "--vocab-size",
                300,
            ],
        )
        assert code == 0
    # Without a text column, the merges can only come from the message contents.
    for name in ("sft", "dpo"):
        merges = json.loads((tmp_path / f"{name}.json").read_text())["model"]["merges"]
        assert len(merges) > 10


def test_bad_inputs(tmp_path):
    def fails(argv, message):
        with pytest.raises(UserError, match=message):
            run_main(train.main, argv)

    out = ["--output-path", tmp_path / "t.json", "--vocab-size", 300]
    fails(["--dataset-dir", tmp_path / "missing", *out], "not found")
    (tmp_path / "empty").mkdir()
    fails(["--dataset-dir", tmp_path / "empty", *out], "is empty")
    save_splits(tmp_path / "no_text", {"train": {"body": ["hello"]}})
    fails(["--dataset-dir", tmp_path / "no_text", *out], "no 'text' column")
    pre_training_dataset(tmp_path / "raw", STORIES)
    (tmp_path / "t.json").write_text("{}")
    fails(["--dataset-dir", tmp_path / "raw", *out], "already exists; pass --overwrite")
    with pytest.raises(SystemExit):  # argparse: a vocabulary smaller than the byte alphabet
        run_main(
            train.main,
            ["--dataset-dir", tmp_path / "raw", "--output-path", "x", "--vocab-size", 100],
        )


def test_cli_error_is_one_line(tmp_path):
    result = run_cli(
        "tokenizer.train", "--dataset-dir", tmp_path / "nope", "--output-path", tmp_path / "t.json"
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")
