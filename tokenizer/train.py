r"""Train the project's byte-level BPE tokenizer on the train split of a raw dataset.

    python3 -m tokenizer.train --dataset-dir data/pre_training/raw \
        --output-path data/tokenizer/tokenizer.json
    python3 -m tokenizer.train --dataset-dir data/sample/pre_training/raw \
        --output-path data/sample/tokenizer/tokenizer.json --vocab-size 2048   # seconds, on CPU

Text is split with the GPT-4 regex, then every byte maps to one of 256 base symbols, so any
Unicode string round-trips exactly (no normalizer). The special tokens of every stage are
reserved at ids 0..5, so one tokenizer serves pre-training, SFT and DPO. It reads `text`, or the
message contents of SFT and DPO data, from a DatasetDict folder or one split folder.
"""

import argparse
import json
import time
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from common.atomic import atomic_write_text
from common.errors import ArgumentParser, UserError, run_cli
from tokenizer import raw_data
from tokenizer.encoding import SPECIAL_TOKENS, load_tokenizer

# GPT-4's (cl100k) pre-tokenizer: contractions, words with one leading non-letter, numbers of at
# most 3 digits, punctuation runs, and whitespace kept with the token that follows it.
GPT4_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256  # the special tokens plus one token per byte
TEXT_COLUMNS = ("text", "messages", "prompt", "chosen", "rejected")


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


def text_columns(split: raw_data.RawSplit) -> tuple[str, ...]:
    """`text`, or else the message columns of SFT and DPO data (their types checked)."""
    names = split.column_names
    found = ("text",) if "text" in names else tuple(c for c in TEXT_COLUMNS if c in names)
    if not found:
        raise UserError(
            f"{split.directory} has columns {names} but no 'text' column (nor 'messages' or "
            "'prompt'/'chosen'/'rejected'); pass a dataset made by a download_dataset step"
        )
    for column in found:
        raw_data.check_type(split.schema.field(column).type, column, split.directory)
    return found


def texts(split: raw_data.RawSplit, max_chars: int | None, stats: dict):
    """Batches of strings: texts or message contents. With max_chars, those of every k-th row
    (k from the size of the text columns, so the sample spans the whole split, and depends only
    on the data) until max_chars characters are taken."""
    columns = text_columns(split)
    stride = max(1, split.column_bytes(columns) // max_chars) if max_chars else 1
    for row, rows in split.iter_rows(columns, 1000):
        batch = []
        for column in columns:
            for value in rows[column][-row % stride :: stride]:
                contents = [value] if column == "text" else [m.get("content") for m in value or []]
                batch += [text for text in contents if isinstance(text, str)]
        if max_chars is not None:
            batch = cut(batch, max_chars - stats["chars"])
        stats["chars"] += sum(map(len, batch))
        stats["texts"] += len(batch)
        yield batch
        if max_chars is not None and stats["chars"] >= max_chars:
            return


def cut(texts: list[str], room: int) -> list[str]:
    """The texts up to `room` characters, the last one cut."""
    kept = []
    for text in texts:
        kept.append(text[:room])
        room -= len(kept[-1])
        if room <= 0:
            break
    return kept


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python3 -m tokenizer.train",
        description="Train the byte-level BPE tokenizer (all special tokens reserved).",
    )
    add = parser.add_argument
    dataset = "raw DatasetDict folder of a download step (train trains, validation measures "
    add("--dataset-dir", required=True, help=dataset + "bytes per token), or one split folder")
    add("--output-path", required=True, help="where to write tokenizer.json (atomically)")
    vocab = f"vocabulary size with the special tokens (at least {MIN_VOCAB_SIZE}; <= 65536 "
    add(
        "--vocab-size",
        type=int,
        default=32768,
        help=vocab + "keeps token arrays uint16). Default 32768",
    )
    max_chars = "train on at most this many characters, from evenly spaced rows (deterministic)"
    add("--max-chars", type=int, help=max_chars)
    add("--min-frequency", type=int, default=2, help="least count of a merged pair. Default 2")
    eval_chars = "characters of the validation split that measure bytes per token. Default 1e7"
    add("--eval-chars", type=int, default=10_000_000, help=eval_chars)
    add("--overwrite", action="store_true", help="replace an existing --output-path")
    args = parser.parse_args(argv)
    if not MIN_VOCAB_SIZE <= args.vocab_size <= 2**31:
        parser.error(f"--vocab-size must be between {MIN_VOCAB_SIZE} and {2**31}")
    if (args.max_chars is not None and args.max_chars <= 0) or args.eval_chars <= 0:
        parser.error("--max-chars and --eval-chars must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    output = Path(args.output_path)
    if output.is_dir():
        raise UserError(
            f"--output-path {output} is a folder; give a path like {output}/tokenizer.json"
        )
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it")
    splits = raw_data.open_splits(args.dataset_dir)
    if "train" not in splits and len(splits) > 1:
        raise UserError(f"{args.dataset_dir} has splits {sorted(splits)} but no 'train' split")
    train_split = splits.get("train") or next(iter(splits.values()))
    text_columns(train_split)
    tokenizer, stats = build_tokenizer(), {"chars": 0, "texts": 0}
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        special_tokens=SPECIAL_TOKENS,  # ids 0..5, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    started = time.perf_counter()
    tokenizer.train_from_iterator(texts(train_split, args.max_chars, stats), trainer)
    seconds = time.perf_counter() - started
    if stats["chars"] == 0:
        raise UserError(f"{train_split.directory} holds no text to train on")
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, tokenizer.to_str(pretty=True))
    tokenizer = load_tokenizer(output)  # checks the special-token ids, as every later step will
    special = json.dumps({token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS})
    print(
        f"trained on {stats['chars']:,} characters from {stats['texts']:,} texts of "
        f"{train_split.name}\nvocab size: {tokenizer.get_vocab_size():,}\nspecial token ids: "
        f"{special}\ntraining time: {seconds:.1f} s"
    )
    measured, total_bytes, total_tokens = splits.get("validation", train_split), 0, 0
    for batch in texts(measured, args.eval_chars, {"chars": 0, "texts": 0}):
        total_bytes += sum(len(text.encode()) for text in batch)
        encoded = tokenizer.encode_batch_fast(batch, add_special_tokens=False)
        total_tokens += sum(len(encoding.ids) for encoding in encoded)
    print(
        f"bytes per token on {measured.name}: {total_bytes / max(total_tokens, 1):.3f} "
        f"(over {total_bytes:,} bytes)\nwrote {output}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
