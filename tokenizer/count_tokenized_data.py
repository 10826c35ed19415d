r"""Count the tokens of a tokenized dataset, per split and in total, after validating it.

    python3 -m tokenizer.count_tokenized_data --tokenized-dir data/pre_training/tokenized
    python3 -m tokenizer.count_tokenized_data --tokenized-dir data/sample/pre_training/tokenized \
        --json   # tiny CPU example, machine-readable

Per split: tokens, documents, mean and max document length; SFT adds trainable tokens, DPO the
mean prompt / chosen / rejected lengths. Each split is checked as the training loaders check it
(tokenized_data.open_split), then every token id against the vocabulary.
"""

import argparse
import json

import numpy as np

from common.errors import ArgumentParser, UserError, run_cli
from tokenizer.tokenized_data import TokenizedSplit, open_dataset

DOCUMENT_COLUMNS = ["tokens", "documents", "mean_document_length", "max_document_length"]
PAIR_COLUMNS = ["mean_prompt_length", "mean_chosen_length", "mean_rejected_length"]
COLUMNS = {
    "pre_training": DOCUMENT_COLUMNS,
    "sft": [*DOCUMENT_COLUMNS, "trainable_tokens"],
    "dpo": ["tokens", "pairs", *PAIR_COLUMNS, "max_pair_length"],
}


def lengths_of(split: TokenizedSplit) -> np.ndarray:
    """[documents] document lengths, or [pairs, 3] prompt, chosen and rejected lengths, of a
    split whose token ids were checked against its vocabulary."""
    split.check_token_ids(int(split.meta["vocab_size"]))
    offsets = split.pair_offsets if split.stage == "dpo" else split.doc_offsets
    lengths = np.diff(np.asarray(offsets, np.int64), axis=-1)  # a pair row: p, c, r, end
    if len(lengths) != split.meta.get("num_documents"):
        said = f"{split.directory}/meta.json says {split.meta.get('num_documents')} documents"
        raise UserError(f"{said}, the offsets hold {len(lengths)}; re-tokenize")
    return lengths


def counts(stage: str, lengths: np.ndarray, trainable: int) -> dict:
    """The counts of documents (or pairs) of these lengths."""
    result = {"tokens": int(lengths.sum()), "documents": len(lengths)}
    if stage == "dpo":
        means = lengths.mean(axis=0) if len(lengths) else np.zeros(3)
        for column, name in enumerate(("prompt", "chosen", "rejected")):
            result[f"mean_{name}_length"] = float(means[column])
        longest = lengths[:, 0] + lengths[:, 1:].max(axis=1, initial=0)
        return result | {"pairs": len(lengths), "max_pair_length": int(longest.max(initial=0))}
    result["mean_document_length"] = float(lengths.mean()) if len(lengths) else 0.0
    result["max_document_length"] = int(lengths.max(initial=0))
    if stage == "sft":
        result["trainable_tokens"] = trainable
    return result


def format_table(stage: str, per_split: dict[str, dict]) -> str:
    rows = [["split"] + COLUMNS[stage]]
    for name, counts in per_split.items():
        values = [counts[column] for column in COLUMNS[stage]]
        rows.append([name] + [f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" for v in values])
    widths = [max(map(len, column)) for column in zip(*rows)]
    lines = []
    for name, *cells in rows:
        cells = [cell.rjust(width) for cell, width in zip(cells, widths[1:])]
        lines.append("  ".join([name.ljust(widths[0]), *cells]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="python3 -m tokenizer.count_tokenized_data",
        description="Validate a tokenized dataset and count its tokens per split.",
    )
    parser.add_argument("--tokenized-dir", required=True, help="tokenize_dataset's output folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object, not a table")
    args: argparse.Namespace = parser.parse_args(argv)
    splits = open_dataset(args.tokenized_dir)
    stages = {split.stage for split in splits.values()}
    if len(stages) > 1:
        raise UserError(f"{args.tokenized_dir} mixes stages {sorted(stages)}; re-tokenize")
    stage, meta = stages.pop(), splits["train"].meta
    per_split, all_lengths, all_trainable = {}, [], 0
    for name, split in splits.items():
        lengths = lengths_of(split)
        trainable = int(np.sum(split.loss_mask, dtype=np.int64)) if stage == "sft" else 0
        per_split[name] = counts(stage, lengths, trainable)
        all_lengths.append(lengths)
        all_trainable += trainable
    per_split["total"] = counts(stage, np.concatenate(all_lengths), all_trainable)
    if args.json:
        result = {"tokenized_dir": args.tokenized_dir, "stage": stage, "splits": per_split}
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.tokenized_dir}: {stage} data, vocab {meta['vocab_size']:,}, {meta['dtype']}")
        print(format_table(stage, per_split))
    return 0


if __name__ == "__main__":
    run_cli(main)
