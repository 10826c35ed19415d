"""End to end on the embedded sample world, as the README runs it: download (sample) -> train the
tokenizer -> tokenize (pre-training, SFT, DPO) -> count -> inspect every document.

Steps run in-process through each CLI's `main(argv)` (the subprocess entry points are covered by
the other tokenizer tests), which keeps this under a few seconds per stage.
"""

import importlib
import json

import pytest
from tokenizer_helpers import run_main


def step(module, *argv):
    code, stdout = run_main(importlib.import_module(module).main, list(argv))
    assert code == 0, f"{module} exited with {code}"
    return stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    step(
        "dataset.pre_training.download_dataset",
        "--output-dir",
        root / "raw",
        "--source",
        "sample",
        "--sample-size-mb",
        0.3,
    )
    for stage in ("sft", "dpo"):
        step(
            f"dataset.post_training.{stage}.download_dataset",
            "--output-dir",
            root / f"raw_{stage}",
            "--source",
            "sample",
            "--sample-size",
            100,
        )
    trained = step(
        "tokenizer.train",
        "--dataset-dir",
        root / "raw",
        "--output-path",
        root / "tokenizer.json",
        "--vocab-size",
        1024,
    )
    return root, trained


STAGES = {
    "pre_training": ("raw", []),
    "sft": ("raw_sft", []),
    "dpo": ("raw_dpo", ["--max-length", 256]),
}


def test_tokenizer_learns_the_sample_world(pipeline):
    _, stdout = pipeline
    ratio = float(stdout.split("bytes per token on validation: ")[1].split()[0])
    assert ratio > 3.0  # a 1024-token BPE compresses simple English well beyond bytes


@pytest.mark.parametrize("stage", list(STAGES))
def test_tokenize_count_and_inspect_each_stage(pipeline, stage):
    root, _ = pipeline
    raw_name, extra = STAGES[stage]
    out = root / f"tokens_{stage}"
    step(
        "tokenizer.tokenize_dataset",
        "--dataset-dir",
        root / raw_name,
        "--tokenizer-path",
        root / "tokenizer.json",
        "--output-dir",
        out,
        "--num-proc",
        1,
        "--stage",
        stage,
        *extra,
    )
    counts = json.loads(step("tokenizer.count_tokenized_data", "--tokenized-dir", out, "--json"))
    assert counts["stage"] == stage
    for split in ("train", "validation", "test"):
        assert counts["splits"][split]["documents"] > 0
        stdout = step(
            "tokenizer.inspect_tokenized_data",
            "--raw-dataset-dir",
            root / raw_name,
            "--tokenized-dataset-dir",
            out,
            "--tokenizer-path",
            root / "tokenizer.json",
            "--split",
            split,
            "--check-all",
        )
        assert " 0 mismatched" in stdout
    if stage == "sft":
        total = counts["splits"]["total"]
        assert 0 < total["trainable_tokens"] < total["tokens"]
