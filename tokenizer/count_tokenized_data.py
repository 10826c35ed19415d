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


def count_split(split: TokenizedSplit) -> dict:
    split.check_token_ids(int(split.meta["vocab_size"]))
    counts = {"tokens": len(split.tokens)}
    if split.stage == "dpo":
        rows = np.asarray(split.pair_offsets, np.int64).reshape(-1, 4)
        lengths = np.diff(rows, axis=1)  # (pairs, 3): prompt, chosen, rejected
        counts["pairs"] = counts["documents"] = len(rows)
        for column, name in enumerate(("prompt", "chosen", "rejected")):
            counts[f"mean_{name}_length"] = float(lengths[:, column].mean()) if len(rows) else 0.0
        longest = lengths[:, 0] + lengths[:, 1:].max(axis=1, initial=0)
        counts["max_pair_length"] = int(longest.max(initial=0))
    else:
        offsets = np.asarray(split.doc_offsets, np.int64)
        lengths = np.diff(offsets)
        counts["documents"] = len(lengths)
        counts["mean_document_length"] = float(lengths.mean()) if len(lengths) else 0.0
        counts["max_document_length"] = int(lengths.max(initial=0))
        if split.stage == "sft":
            counts["trainable_tokens"] = int(np.asarray(split.loss_mask).sum(dtype=np.int64))
    if counts["documents"] != split.meta.get("num_documents"):
        said = f"{split.directory}/meta.json says {split.meta.get('num_documents')} documents"
        raise UserError(f"{said}, the offsets hold {counts['documents']}; re-tokenize")
    return counts


def total(per_split: dict[str, dict]) -> dict:
    """Sums of counts, maxima of maxima, and means weighted by each split's documents."""
    documents, summed = sum(counts["documents"] for counts in per_split.values()), {}
    for counts in per_split.values():
        for key, value in counts.items():
            if key.startswith("max_"):
                summed[key] = max(summed.get(key, 0), value)
            elif key.startswith("mean_"):
                share = counts["documents"] / documents if documents else 0.0
                summed[key] = summed.get(key, 0.0) + value * share
            else:
                summed[key] = summed.get(key, 0) + value
    return summed


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
    per_split = {name: count_split(split) for name, split in splits.items()}
    per_split["total"] = total(per_split)
    if args.json:
        result = {"tokenized_dir": args.tokenized_dir, "stage": stage, "splits": per_split}
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.tokenized_dir}: {stage} data, vocab {meta['vocab_size']:,}, {meta['dtype']}")
        print(format_table(stage, per_split))
    return 0


if __name__ == "__main__":
    run_cli(main)
