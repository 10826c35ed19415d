"""inspect_tokenized_data and count_tokenized_data: every stage, mismatch detection, the
interactive commands, and validation of damaged tokenized folders."""

import json
import shutil

import numpy as np
import pytest
from tokenizer_helpers import (
    CONVERSATIONS,
    all_stages_tokenizer,
    dpo_dataset,
    pre_training_dataset,
    run_cli,
    run_main,
    sft_dataset,
    tokenize,
    train_tokenizer,
)

from common.errors import UserError
from tokenizer import count_tokenized_data, inspect_tokenized_data
from tokenizer.encoding import load_tokenizer
from tokenizer.token_bytes import byte_decoder
from tokenizer.tokenized_data import open_split

STAGE_DATASETS = {"pre_training": pre_training_dataset, "sft": sft_dataset, "dpo": dpo_dataset}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{stage: (raw dir, tokenized dir)} plus the tokenizer path, built once."""
    root = tmp_path_factory.mktemp("inspect")
    tokenizer_path = all_stages_tokenizer(root)
    built = {}
    for stage, make in STAGE_DATASETS.items():
        raw = make(root / f"raw_{stage}")
        out = root / f"tok_{stage}"
        post = [] if stage == "pre_training" else ["--max-length", 24]
        tokenize(raw, out, tokenizer_path, "--stage", stage, *post)
        built[stage] = (raw, out)
    return built, tokenizer_path


def inspect(raw, out, tokenizer_path, *extra):
    return run_main(
        inspect_tokenized_data.main,
        [
            "--raw-dataset-dir",
            raw,
            "--tokenized-dataset-dir",
            out,
            "--tokenizer-path",
            tokenizer_path,
            "--color",
            "never",
            *extra,
        ],
    )


def test_byte_decoder_is_the_byte_level_alphabet():
    from tokenizers.pre_tokenizers import ByteLevel

    decoder = byte_decoder()
    assert sorted(decoder.values()) == list(range(256))
    assert set(decoder) == set(ByteLevel.alphabet())


@pytest.mark.parametrize("stage", list(STAGE_DATASETS))
def test_inspect_shows_and_checks_every_stage(folders, stage):
    built, tokenizer_path = folders
    raw, out = built[stage]
    code, stdout = inspect(raw, out, tokenizer_path, "--index", 0, "--num", 3)
    assert code == 0, stdout
    assert stdout.count(f"=== {stage} document") == 3 and "MISMATCH" not in stdout
    assert "[<|endoftext|>]" in stdout and "ids: 0 " in stdout
    if stage == "sft":
        assert "{Blue}" in stdout and "mask: 0" in stdout  # trained tokens marked
        assert "truncated to --max-length 24" in stdout
    if stage == "dpo":
        assert "--- chosen:" in stdout and "--- rejected:" in stdout and "raw prompt user" in stdout
    code, stdout = inspect(raw, out, tokenizer_path, "--check-all", "--split", "test")
    assert code == 0 and "0 mismatched" in stdout


def corrupt_token(out, split, position):
    """Change one token of a finished folder without touching its sizes (meta stays valid)."""
    tokens = np.memmap(out / split / "tokens.bin", np.uint16, mode="r+")
    tokens[position] = 300 if tokens[position] != 300 else 301
    tokens.flush()


@pytest.mark.parametrize("stage", list(STAGE_DATASETS))
def test_inspect_flags_a_document_that_does_not_decode_to_its_text(folders, tmp_path, stage):
    import shutil

    built, tokenizer_path = folders
    raw, out = built[stage]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    corrupt_token(copy, "validation", 2)
    code, stdout = inspect(raw, copy, tokenizer_path, "--split", "validation", "--index", 0)
    assert code == 1 and "MISMATCH" in stdout
    code, stdout = inspect(raw, copy, tokenizer_path, "--split", "validation", "--index", 1)
    assert code == 0


def test_inspect_flags_a_wrong_loss_mask(folders, tmp_path):
    import shutil

    built, tokenizer_path = folders
    raw, out = built["sft"]
    shutil.copytree(out, tmp_path / "copy")
    mask = np.memmap(tmp_path / "copy" / "train" / "loss_mask.bin", np.uint8, mode="r+")
    mask[1] = 1  # the <|user|> token is never trained on
    mask.flush()
    code, stdout = inspect(raw, tmp_path / "copy", tokenizer_path, "--index", 0)
    assert code == 1 and "loss mask is wrong from token 1" in stdout


def test_interactive_commands(folders, monkeypatch):
    built, tokenizer_path = folders
    raw, out = built["sft"]
    commands = iter(["", "p", "j 2", "r", "bogus", "q"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: next(commands))
    code, stdout = inspect(raw, out, tokenizer_path)
    shown = [int(line.split()[3]) for line in stdout.splitlines() if line.startswith("=== ")]
    assert shown[:4] == [0, 1, 0, 2] and len(shown) == 6 and code == 0
    assert "unknown command 'bogus'" in stdout


def test_inspect_bad_inputs(folders, tmp_path):
    built, tokenizer_path = folders
    raw, out = built["pre_training"]
    other = train_tokenizer(raw, tmp_path / "other.json", vocab_size=300)
    with pytest.raises(UserError, match="sha256 differs"):
        inspect(raw, out, other)
    with pytest.raises(UserError, match="not found"):
        inspect(raw, out, tokenizer_path, "--split", "nope")
    with pytest.raises(UserError, match="past the last document"):
        inspect(raw, out, tokenizer_path, "--index", 999)
    with pytest.raises(UserError, match="needs 'messages'"):  # raw data of another stage
        inspect(raw, built["sft"][1], tokenizer_path)
    with pytest.raises(UserError, match="is the 'test' split folder, but --split is 'train'"):
        inspect(raw / "test", out / "test", tokenizer_path, "--split", "train")
    with pytest.raises(UserError, match="train has no split 'test' \\(it has train\\)"):
        inspect(raw / "train", out / "test", tokenizer_path)  # another split's folder
    shutil.copytree(raw / "test", tmp_path / "held_out")  # a split folder by another name
    code, stdout = inspect(tmp_path / "held_out", out / "test", tokenizer_path, "--check-all")
    assert code == 0 and "0 mismatched" in stdout


@pytest.mark.parametrize("stage", list(STAGE_DATASETS))
def test_split_folders_and_dataset_folders_show_the_same(folders, stage):
    # The original README points both dirs at split folders (.../test); ours at the dataset
    # folders with --split. Any mix of the two shows the same documents.
    built, tokenizer_path = folders
    raw, out = built[stage]
    shown = {
        inspect(raw_dir, out_dir, tokenizer_path, *split, "--num", 3)[1]
        for raw_dir, out_dir, split in (
            (raw, out, ["--split", "test"]),
            (raw / "test", out / "test", []),
            (raw, out / "test", ["--split", "test"]),
            (raw / "test", out, ["--split", "test"]),
        )
    }
    assert len(shown) == 1 and shown.pop().count(f"=== {stage} document") == 3


def count(out, *extra):
    return run_main(count_tokenized_data.main, ["--tokenized-dir", out, *extra])


def test_count_every_stage(folders):
    built, tokenizer_path = folders
    tokenizer = load_tokenizer(tokenizer_path)
    _, out = built["pre_training"]
    code, stdout = count(out, "--json")
    result = json.loads(stdout)
    train = open_split(out / "train")
    lengths = np.diff(train.doc_offsets.astype(np.int64))
    assert result["splits"]["train"] == {
        "tokens": len(train.tokens),
        "documents": train.meta["num_documents"],
        "mean_document_length": float(lengths.mean()),
        "max_document_length": int(lengths.max()),
    }
    total = result["splits"]["total"]
    assert total["tokens"] == sum(
        open_split(out / s).meta["num_tokens"] for s in ("train", "validation", "test")
    )

    _, out = built["sft"]
    result = json.loads(count(out, "--json")[1])
    mask = open_split(out / "train").loss_mask
    assert result["splits"]["train"]["trainable_tokens"] == int(mask.sum()) > 0
    assert result["splits"]["train"]["documents"] == len(CONVERSATIONS)
    assert result["stage"] == "sft"

    _, out = built["dpo"]
    result = json.loads(count(out, "--json")[1])
    rows = open_split(out / "test").pair_offsets.astype(np.int64)
    test = result["splits"]["test"]
    assert test["pairs"] == len(rows)
    assert test["mean_chosen_length"] == pytest.approx(float((rows[:, 2] - rows[:, 1]).mean()))
    assert test["max_pair_length"] <= 24
    code, table = count(out)
    assert code == 0 and "mean_prompt_length" in table and "total" in table
    assert f"vocab {tokenizer.get_vocab_size()}" in table


@pytest.fixture
def damaged(folders, tmp_path):
    import shutil

    shutil.copytree(folders[0]["pre_training"][1], tmp_path / "out")
    return tmp_path / "out"


def test_count_missing_meta(damaged):
    (damaged / "validation" / "meta.json").unlink()
    with pytest.raises(UserError, match="meta.json is missing"):
        count(damaged)


def test_count_bytes_not_a_multiple_of_the_dtype(damaged):
    with open(damaged / "train" / "tokens.bin", "ab") as file:
        file.write(b"\x00")
    with pytest.raises(UserError, match="not a multiple of 2"):
        count(damaged)


def test_count_token_id_beyond_the_vocabulary(damaged):
    tokens = np.memmap(damaged / "train" / "tokens.bin", np.uint16, mode="r+")
    tokens[3] = 60000
    tokens.flush()
    with pytest.raises(UserError, match="token id 60000 is outside the vocabulary of size"):
        count(damaged)


def test_count_offsets_disagree_with_tokens(damaged):
    offsets = np.memmap(damaged / "train" / "doc_offsets.bin", np.uint64, mode="r+")
    offsets[-1] -= 1
    offsets.flush()
    with pytest.raises(UserError, match="does not delimit"):
        count(damaged)


def test_count_cli_error_is_one_line(damaged):
    (damaged / "train" / "meta.json").write_text("{not json")
    result = run_cli("tokenizer.count_tokenized_data", "--tokenized-dir", damaged)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert result.stderr.strip().count("\n") == 0 and "not valid JSON" in result.stderr
