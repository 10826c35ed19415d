"""The shard format: what the writer writes, the reader reads back and validates."""

import errno
import io
import json

import numpy as np
import pytest

from common.errors import UserError
from tokenizer.tokenized_data import (
    SplitWriter,
    open_dataset,
    open_split,
    token_dtype,
    write_array,
)


def write_split(directory, stage="pre_training", vocab_size=1000):
    writer = SplitWriter(directory, stage, vocab_size)
    if stage == "dpo":
        writer.add_pairs([([0, 3, 7, 4], [8, 9, 5], [10, 5]), ([0, 3, 4], [11, 5], [12, 13, 5])])
    elif stage == "sft":
        writer.add_documents(
            [[0, 3, 7, 5, 4, 8, 5], [0, 3, 5, 4, 9, 9, 5]],
            [[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1]],
        )
    else:
        writer.add_documents([[0, 10, 11], [0, 12]])
        writer.add_documents([[0, 13, 14, 15]])
    writer.finish("abc")


def test_pre_training_round_trip(tmp_path):
    write_split(tmp_path / "train")
    split = open_split(tmp_path / "train", "pre_training")
    assert split.tokens.dtype == np.uint16
    assert split.tokens.tolist() == [0, 10, 11, 0, 12, 0, 13, 14, 15]
    assert split.doc_offsets.tolist() == [0, 3, 5, 9]
    assert split.document(2).tolist() == [0, 13, 14, 15]
    assert split.meta["num_documents"] == 3 and split.meta["num_tokens"] == 9


def test_sft_and_dpo_round_trip(tmp_path):
    write_split(tmp_path / "sft", "sft")
    sft = open_split(tmp_path / "sft")
    assert sft.stage == "sft"
    assert sft.loss_mask.tolist()[:7] == [0, 0, 0, 0, 0, 1, 1]
    write_split(tmp_path / "dpo", "dpo")
    dpo = open_split(tmp_path / "dpo")
    assert dpo.stage == "dpo"
    p, c, r, e = dpo.pair_offsets[1].tolist()
    assert dpo.tokens[p:c].tolist() == [0, 3, 4]
    assert dpo.tokens[c:r].tolist() == [11, 5]
    assert dpo.tokens[r:e].tolist() == [12, 13, 5]


def test_large_vocab_uses_uint32():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_meta_json_names_the_stage(tmp_path):
    write_split(tmp_path / "train", "sft")
    meta = json.loads((tmp_path / "train" / "meta.json").read_text())
    assert meta["stage"] == "sft" and meta["format_version"] == 2
    assert "mode" not in meta and "profile" not in meta


def test_wrong_stage_is_a_one_line_error(tmp_path):
    write_split(tmp_path / "train")
    with pytest.raises(UserError) as caught:
        open_dataset(tmp_path, "sft")
    assert str(caught.value) == (
        f"{tmp_path / 'train'} holds pre_training data but this step needs sft data; make it "
        "with `python3 -m tokenizer.tokenize_dataset --stage sft`"
    )


def test_the_old_layout_is_not_read(tmp_path):
    write_split(tmp_path / "train")
    meta_path = tmp_path / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["mode"] = meta.pop("stage")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="lacks 'stage'; re-tokenize"):
        open_split(tmp_path / "train")


def test_damaged_arrays_are_errors(tmp_path):
    write_split(tmp_path / "train")
    with open(tmp_path / "train" / "tokens.bin", "ab") as file:
        file.write(b"\x01")  # odd byte count for uint16
    with pytest.raises(UserError, match="not a multiple"):
        open_split(tmp_path / "train")
    with open(tmp_path / "train" / "tokens.bin", "ab") as file:
        file.write(b"\x01")  # now even, but meta.json disagrees
    with pytest.raises(UserError, match="meta.json says"):
        open_split(tmp_path / "train")


def test_missing_meta_and_out_of_vocab_ids(tmp_path):
    write_split(tmp_path / "train", vocab_size=1000)
    split = open_split(tmp_path / "train")
    split.check_token_ids(1000)
    with pytest.raises(UserError, match="token id 15"):
        split.check_token_ids(15)
    meta = json.loads((tmp_path / "train" / "meta.json").read_text())
    (tmp_path / "train" / "meta.json").unlink()
    with pytest.raises(UserError, match="meta.json is missing"):
        open_split(tmp_path / "train")
    assert meta["arrays"]["tokens.bin"]["bytes"] == 18


def test_offsets_that_do_not_delimit_the_tokens_are_errors(tmp_path):
    write_split(tmp_path / "train")
    offsets = tmp_path / "train" / "doc_offsets.bin"
    import numpy as np

    values = np.fromfile(offsets, np.uint64)
    values[1], values[2] = values[2], values[1]  # no longer rising
    values.tofile(offsets)
    with pytest.raises(UserError, match="does not delimit"):
        open_split(tmp_path / "train")


@pytest.mark.parametrize("dtype", ["float16", "int16", "uint32", "complex", 7])
def test_only_the_dtype_the_writer_writes_is_read(tmp_path, dtype):
    # float16 read garbage ids with exit 0, and an unknown name raised a TypeError traceback.
    write_split(tmp_path / "train", vocab_size=1000)
    meta_path = tmp_path / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["dtype"] = dtype
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        UserError,
        match=f"dtype {dtype!r} is not what tokenize_dataset writes .*"
        r"\(uint16\); re-tokenize",
    ):
        open_split(tmp_path / "train")
    meta["dtype"], meta["vocab_size"] = "uint16", "1000"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="vocab_size '1000' is not a positive integer"):
        open_split(tmp_path / "train")


def test_writes_report_a_full_disk_with_its_errno():
    # numpy's tofile reports a full disk as "N requested and M written" (no errno); the arrays
    # are written with file.write, whose OSError(ENOSPC) common.disk_space recognises.
    class FullDisk(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as error:
        write_array(FullDisk(), [1, 2, 3], np.uint16)
    assert error.value.errno == errno.ENOSPC
