r"""Train the project's byte-level BPE tokenizer on the train split of a raw dataset.

    python3 -m tokenizer.train --dataset-dir data/pre_training/raw \
        --output-path data/tokenizer/tokenizer.json

Tiny CPU example (a few seconds on the sample corpus):

    python3 -m dataset.pre_training.download_dataset --output-dir data/sample/pre_training/raw \
        --source sample
    python3 -m tokenizer.train --dataset-dir data/sample/pre_training/raw \
        --output-path data/sample/tokenizer/tokenizer.json --vocab-size 2048

The tokenizer splits text with the GPT-4 regex, then maps every byte to one of 256 base symbols
(byte-level BPE), so any Unicode string encodes and decodes back exactly; no normalizer is used
for the same reason. The special tokens of every stage (`tokenizer.encoding.SPECIAL_TOKENS`)
are reserved at ids 0..5, so one tokenizer serves pre-training, SFT and DPO.

`--dataset-dir` takes the DatasetDict folder or one split folder. Pre-training data is read from
its `text` column; SFT (`messages`) and DPO (`prompt`/`chosen`/`rejected`) data from the
message contents.
"""

import argparse
import math
import time
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from common.atomic import atomic_write_text
from common.errors import ArgumentParser, UserError, run_cli
from tokenizer import raw_data
from tokenizer.encoding import SPECIAL_TOKENS, describe, load_tokenizer

# GPT-4's (cl100k) pre-tokenizer: contractions, words with one leading non-letter, numbers of at
# most 3 digits, punctuation runs, and whitespace kept with the token that follows it.
GPT4_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256  # the special tokens plus one token per byte
BATCH_ROWS = 1000


def build_tokenizer() -> Tokenizer:
    """An untrained tokenizer with the project's pre-tokenizer and decoder."""
    tokenizer = Tokenizer(models.BPE())  # no unk token: every byte has its own symbol
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def row_texts(rows: dict[str, list]) -> Iterator[str]:
    """The strings of one batch of rows: texts, or the contents of every message."""
    if "text" in rows:
        yield from (text for text in rows["text"] if isinstance(text, str))
        return
    for column in ("messages", "prompt", "chosen", "rejected"):
        for conversation in rows.get(column, []):
            for message in conversation or []:
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, str):
                    yield content


def text_columns(dataset, where: Path) -> tuple[str, ...]:
    columns = dataset.column_names
    chat = tuple(c for c in ("messages", "prompt", "chosen", "rejected") if c in columns)
    found = ("text",) if "text" in columns else chat
    if found:
        raw_data.check_column_types(dataset, found, where)
        return found
    raise UserError(
        f"{where} has columns {columns} but no 'text' column (nor 'messages' or "
        "'prompt'/'chosen'/'rejected'); pass a dataset made by dataset/*/download_dataset"
    )


def iter_texts(dataset, columns, max_chars: int | None, stats: dict) -> Iterator[list[str]]:
    """Batches of training strings. With `max_chars`, take every k-th row (k chosen from the
    size of the text columns, so the sample spans the whole split) until the budget is used up.
    The choice depends only on the data, so training is repeatable."""
    stride = 1
    if max_chars is not None:
        stride = max(1, math.floor(dataset.column_bytes(columns) / max_chars))
    row = 0
    for rows in dataset.iter_rows(columns, BATCH_ROWS):
        n = len(rows[columns[0]])
        take = [i for i in range(n) if (row + i) % stride == 0]
        row += n
        texts = []
        for text in row_texts({c: [rows[c][i] for i in take] for c in columns}):
            if max_chars is not None and stats["chars"] + len(text) > max_chars:
                texts.append(text[: max_chars - stats["chars"]])
                stats["chars"] = max_chars
                break
            texts.append(text)
            stats["chars"] += len(text)
        stats["texts"] += len(texts)
        yield texts
        if max_chars is not None and stats["chars"] >= max_chars:
            return


def bytes_per_token(tokenizer: Tokenizer, dataset, columns, max_chars: int) -> tuple[float, int]:
    """(UTF-8 bytes per token, bytes measured) on at most `max_chars` characters of `dataset`."""
    stats = {"chars": 0, "texts": 0}
    total_bytes = total_tokens = 0
    for texts in iter_texts(dataset, columns, None, stats):
        for encoding in tokenizer.encode_batch_fast(texts, add_special_tokens=False):
            total_tokens += len(encoding.ids)
        total_bytes += sum(len(text.encode("utf-8")) for text in texts)
        if stats["chars"] >= max_chars:
            break
    return (total_bytes / total_tokens if total_tokens else float("nan")), total_bytes


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python3 -m tokenizer.train",
        description="Train the byte-level BPE tokenizer (all special tokens reserved).",
    )
    parser.add_argument(
        "--dataset-dir",
        required=True,
        help="raw dataset: the DatasetDict folder written by download_dataset (its train split is "
        "used, validation measures bytes/token) or a single split folder",
    )
    parser.add_argument(
        "--output-path", required=True, help="where to write tokenizer.json (written atomically)"
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=32768,
        help=f"total vocabulary size including the {len(SPECIAL_TOKENS)} special tokens "
        f"(at least {MIN_VOCAB_SIZE}; <= 65536 keeps token arrays uint16). Default 32768",
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        default=None,
        help="train on at most this many characters, taken from evenly spaced rows of the train "
        "split (deterministic); bounds memory and time on big corpora. Default: the whole split",
    )
    parser.add_argument(
        "--min-frequency",
        type=int,
        default=2,
        help="a pair must occur at least this often to be merged. Default 2",
    )
    parser.add_argument(
        "--eval-chars",
        type=int,
        default=10_000_000,
        help="characters of the validation split used to report bytes per token. Default 1e7",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output-path"
    )
    args = parser.parse_args(argv)
    if args.vocab_size < MIN_VOCAB_SIZE or args.vocab_size > 2**31:
        parser.error(f"--vocab-size must be between {MIN_VOCAB_SIZE} and {2**31}")
    if args.max_chars is not None and args.max_chars <= 0:
        parser.error("--max-chars must be positive")
    if args.eval_chars <= 0:
        parser.error("--eval-chars must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    output = Path(args.output_path)
    if output.is_dir():
        raise UserError(
            f"--output-path {output} is a folder; give a file path like {output}/tokenizer.json"
        )
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it")

    splits = raw_data.open_splits(args.dataset_dir)
    dataset_dir = Path(args.dataset_dir)
    if "train" in splits:
        train_name = "train"
    elif len(splits) == 1:
        train_name = next(iter(splits))
    else:
        raise UserError(f"{dataset_dir} has splits {sorted(splits)} but no 'train' split")
    train_set = splits[train_name]
    columns = text_columns(train_set, dataset_dir / train_name)
    if len(train_set) == 0:
        raise UserError(f"the {train_name} split of {dataset_dir} has no rows; nothing to train on")

    tokenizer = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        special_tokens=SPECIAL_TOKENS,  # ids 0..5, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    stats = {"chars": 0, "texts": 0}
    started = time.perf_counter()
    tokenizer.train_from_iterator(iter_texts(train_set, columns, args.max_chars, stats), trainer)
    seconds = time.perf_counter() - started
    if stats["chars"] == 0:
        raise UserError(f"the {train_name} split of {dataset_dir} holds no text to train on")

    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, tokenizer.to_str(pretty=True))
    tokenizer = load_tokenizer(output)  # checks the special-token ids, as every later step will

    print(f"trained on {stats['chars']:,} characters from {stats['texts']:,} texts of {train_name}")
    print(f"vocab size: {tokenizer.get_vocab_size():,}")
    print(f"special token ids: {describe(tokenizer)}")
    print(f"training time: {seconds:.1f} s")
    eval_name = "validation" if "validation" in splits else train_name
    ratio, measured = bytes_per_token(
        tokenizer, splits[eval_name], text_columns(splits[eval_name], dataset_dir), args.eval_chars
    )
    print(f"bytes per token on {eval_name}: {ratio:.3f} (over {measured:,} bytes)")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
