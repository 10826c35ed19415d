"""Open a tokenized dataset for training and check it fits the run (shared by all stages).

Checks, each a one-line UserError: the folder exists and holds the stage's data
(tokenizer/tokenized_data.open_dataset); the needed splits are there; every split was made by
the run's tokenizer (same sha256) and its vocabulary fits the model's.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from tokenizer.tokenized_data import TokenizedSplit, open_dataset


def open_training_data(
    data_dir: str | Path,
    stage: str,
    tokenizer_sha256: str,
    vocab_size: int,
    splits: tuple[str, ...] = ("train", "validation"),
) -> dict[str, TokenizedSplit]:
    """The requested splits of the tokenized dataset at `data_dir`, validated for this run.
    (Pre-training and SFT also take mixtures: training/data_mixture.py.)"""
    if "," in str(data_dir):
        raise UserError(
            f"--data_dir={data_dir}: this stage reads one tokenized folder, not a mixture"
        )
    opened = open_dataset(data_dir, stage)
    for name in splits:
        if name not in opened:
            raise UserError(
                f"{Path(data_dir) / name} is missing; the run needs the {', '.join(splits)} "
                "splits (re-run tokenizer.tokenize_dataset)"
            )
        check_split(opened[name], tokenizer_sha256, vocab_size)
    return {name: opened[name] for name in splits}


def check_split(split: TokenizedSplit, tokenizer_sha256: str, vocab_size: int) -> None:
    meta = split.meta
    data_sha = meta.get("tokenizer_sha256")
    if data_sha != tokenizer_sha256:
        raise UserError(
            f"{split.directory} was tokenized with a different tokenizer (sha256 "
            f"{str(data_sha)[:12]}..., the run's is {tokenizer_sha256[:12]}...); re-tokenize "
            "with this --tokenizer_path or point --tokenizer_path at the one the data used"
        )
    if meta["vocab_size"] > vocab_size:
        raise UserError(
            f"{split.directory} has vocabulary size {meta['vocab_size']}, larger than the "
            f"model's {vocab_size}; re-tokenize with the run's tokenizer"
        )
