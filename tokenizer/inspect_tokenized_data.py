r"""Look at tokenized documents next to their raw text, and flag any that do not decode back to it.

    python3 -m tokenizer.inspect_tokenized_data --raw-dataset-dir data/pre_training/raw \
        --tokenized-dataset-dir data/tokens/pre_training --tokenizer-path data/tokenizer.json

Tiny CPU example (non-interactive: documents 0..2 of the validation split):

    python3 -m tokenizer.inspect_tokenized_data --raw-dataset-dir data/sample/pre_training/raw \
        --tokenized-dataset-dir data/sample/pre_training/tokenized \
        --tokenizer-path data/sample/tokenizer/tokenizer.json \
        --split validation --index 0 --num 3

With a terminal on stdin (and no --index/--num) it is interactive: Enter or `n` next, `p`
previous, `j N` (or just `N`) jump, `r` random, `q` quit. Otherwise it prints the documents
asked for and exits; `--check-all` checks every document of the split and prints only problems.

Each document shows its raw row, its tokens with visible boundaries (`[tok]`; in color,
alternating backgrounds) and its ids. SFT documents mark the trained tokens (`{tok}`, bold green)
and print the loss mask; DPO pairs show prompt, chosen and rejected separately. A document is
flagged MISMATCH when its tokens do not decode to exactly the raw text as its stage renders it
(a truncated part must be the start of its response or the end of its prompt), when they differ
from a fresh encoding of that text, or when an SFT loss mask is not 1 exactly on assistant
content and its `<|end|>`. The exit status is 1 if any document shown or checked mismatched.
"""

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.atomic import sha256_file
from common.errors import ArgumentParser, UserError, run_cli
from tokenizer import raw_data
from tokenizer.encoding import (
    ASSISTANT_ID,
    BOS_ID,
    DOC_SEPARATOR,
    END_OF_TURN_ID,
    SPECIAL_TOKENS,
    chat_pieces,
    encode_conversation,
    encode_prompt,
    encode_response,
    load_tokenizer,
    render_text,
    response_pieces,
)
from tokenizer.token_display import TokenBytes, render_tokens
from tokenizer.tokenize_dataset import SOURCE_ROWS_FILE
from tokenizer.tokenized_data import SPLITS, open_split


@dataclass
class Part:
    label: str
    ids: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class Document:
    index: int
    row: int
    raw: list[tuple[str, str]]  # (label, text) pairs to print
    parts: list[Part]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def expected_mask(ids: np.ndarray) -> np.ndarray:
    """1 on tokens inside an assistant turn (after <|assistant|>, up to and including <|end|>)."""
    mask = np.zeros(len(ids), np.uint8)
    inside = False
    for position, token_id in enumerate(ids.tolist()):
        if inside:
            mask[position] = 1
            inside = token_id != END_OF_TURN_ID
        elif token_id == ASSISTANT_ID:
            inside = True
    return mask


def tokenized_split_folder(path: Path, split: str | None) -> tuple[Path, str]:
    """(split folder, split name) from --tokenized-dataset-dir and --split: the folder is a
    tokenize_dataset output (then --split picks the split, train by default) or one of its
    split folders (the form of the original README; then the split is the folder's name)."""
    if (path / "meta.json").is_file():
        if split not in (None, path.name):
            raise UserError(
                f"--tokenized-dataset-dir {path} is the {path.name!r} split folder, but --split "
                f"is {split!r}; pass its parent folder with --split {split}, or leave --split out"
            )
        return path, path.name
    split = split or "train"
    if not (path / split).is_dir():
        raise UserError(
            f"{path / split} not found; --tokenized-dataset-dir must be a tokenize_dataset output "
            f"folder (and --split one of its splits) or one of its split folders"
        )
    return path / split, split


def raw_split(path: Path, split: str):
    """The raw split `split` of the dataset at `path`, or the split folder `path` itself."""
    raw_splits = raw_data.load_datasets(path)
    if split in raw_splits:
        return raw_splits[split]
    if (path / "state.json").is_file() and path.name not in SPLITS:  # a split folder, renamed
        return raw_splits[path.name]
    raise UserError(
        f"--raw-dataset-dir {path} has no split {split!r} (it has {', '.join(raw_splits)}); "
        f"pass the raw split that was tokenized into the {split!r} split"
    )


class Inspector:
    """Builds and checks `Document`s of one split."""

    def __init__(self, args):
        self.tokenizer = load_tokenizer(args.tokenizer_path)
        self.token_bytes = TokenBytes(self.tokenizer)
        directory, self.split_name = tokenized_split_folder(
            Path(args.tokenized_dataset_dir), args.split
        )
        self.split = open_split(directory)
        self.stage = self.split.stage
        if self.split.meta.get("tokenizer_sha256") != sha256_file(args.tokenizer_path):
            raise UserError(
                f"{args.tokenizer_path} is not the tokenizer {directory} was made with "
                "(sha256 differs); pass the same --tokenizer-path as to tokenize_dataset"
            )
        self.raw = raw_split(Path(args.raw_dataset_dir), self.split_name)
        raw_data.check_columns({self.split_name: self.raw}, self.stage, args.raw_dataset_dir)
        self.max_length = self.split.meta.get("stats", {}).get("max_length")
        self.size = int(self.split.meta["num_documents"])
        self.source_rows = self._source_rows(directory)

    def _source_rows(self, directory: Path) -> np.ndarray:
        path = directory / SOURCE_ROWS_FILE
        if path.is_file():
            rows = np.fromfile(path, np.uint64)
            if len(rows) != self.size:
                raise UserError(
                    f"{path} has {len(rows)} rows for {self.size} documents; re-tokenize"
                )
            if len(rows) and int(rows.max()) >= len(self.raw):
                raise UserError(
                    f"{path} points past the {len(self.raw)} rows of the raw split; is "
                    "--raw-dataset-dir the dataset that was tokenized?"
                )
            return rows
        if self.size != len(self.raw):
            raise UserError(
                f"{directory} has no {SOURCE_ROWS_FILE} and {self.size} documents for "
                f"{len(self.raw)} raw rows; cannot match them, re-tokenize"
            )
        return np.arange(self.size, dtype=np.uint64)

    def document(self, index: int) -> Document:
        row = int(self.source_rows[index])
        record = self.raw[row]
        if self.stage == "dpo":
            return self._pair(index, row, record)
        start, end = int(self.split.doc_offsets[index]), int(self.split.doc_offsets[index + 1])
        ids = np.asarray(self.split.tokens[start:end])
        if self.stage == "pre_training":
            return self._text(index, row, record["text"], ids)
        mask = np.asarray(self.split.loss_mask[start:end])
        return self._conversation(index, row, record["messages"], ids, mask)

    def _text(self, index, row, text, ids) -> Document:
        doc = Document(index, row, [("text", text)], [Part("tokens", ids)])
        if len(ids) == 0 or ids[0] != BOS_ID:
            doc.problems.append(f"does not start with {DOC_SEPARATOR}")
        if np.any(ids[1:] < len(SPECIAL_TOKENS)):
            doc.problems.append("holds a special token inside the text")
        decoded = self.tokenizer.decode(ids[1:].tolist(), skip_special_tokens=False)
        if decoded != text:
            doc.problems.append(f"decodes to {decoded[:80]!r}... not the raw text")
        elif ids[1:].tolist() != self.tokenizer.encode(text, add_special_tokens=False).ids:
            doc.problems.append("differs from a fresh encoding of the raw text")
        return doc

    def _conversation(self, index, row, messages, ids, mask) -> Document:
        raw = [(m["role"], m["content"]) for m in messages]
        doc = Document(index, row, raw, [Part("tokens", ids, mask)])
        rendered = render_text(chat_pieces(messages)).encode()
        decoded = self.token_bytes.join(ids)
        truncated = len(decoded) < len(rendered) and len(ids) == self.max_length
        if decoded != rendered and not (truncated and rendered.startswith(decoded)):
            doc.problems.append("does not decode to the rendered conversation")
        fresh_ids, fresh_mask = encode_conversation(self.tokenizer, messages)
        if ids.tolist() != fresh_ids[: len(ids)] or mask.tolist() != fresh_mask[: len(ids)]:
            doc.problems.append("differs from a fresh encoding of the conversation")
        structural = expected_mask(ids)
        if not np.array_equal(structural, mask):
            first = int(np.flatnonzero(structural != mask)[0])
            doc.problems.append(f"loss mask is wrong from token {first} on")
        if truncated:
            doc.notes.append(f"truncated to --max-length {self.max_length}")
        doc.notes.append(f"{int(mask.sum())} trained tokens of {len(ids)}")
        return doc

    def _pair(self, index, row, record) -> Document:
        p, c, r, e = (int(x) for x in self.split.pair_offsets[index])
        tokens = self.split.tokens
        prompt, chosen, rejected = (np.asarray(tokens[a:b]) for a, b in ((p, c), (c, r), (r, e)))
        messages = record["prompt"]
        replies = {
            "chosen": record["chosen"][0]["content"],
            "rejected": record["rejected"][0]["content"],
        }
        raw = [(f"prompt {m['role']}", m["content"]) for m in messages]
        raw += [(name, text) for name, text in replies.items()]
        parts = [Part("prompt", prompt), Part("chosen", chosen), Part("rejected", rejected)]
        doc = Document(index, row, raw, parts)

        full_prompt = encode_prompt(self.tokenizer, messages)
        rendered = render_text(chat_pieces(messages, add_generation_prompt=True)).encode()
        if len(prompt) < len(full_prompt):  # truncated: the leading BOS plus the prompt's end
            doc.notes.append(f"prompt truncated from {len(full_prompt)} to {len(prompt)} tokens")
            ok = prompt.tolist() == [BOS_ID] + full_prompt[len(full_prompt) - len(prompt) + 1 :]
            ok = ok and rendered.endswith(self.token_bytes.join(prompt[1:]))
        else:
            ok = prompt.tolist() == full_prompt and self.token_bytes.join(prompt) == rendered
        if not ok:
            doc.problems.append("prompt does not match the rendered prompt messages")
        for name, part in (("chosen", chosen), ("rejected", rejected)):
            full = encode_response(self.tokenizer, replies[name])
            expected_bytes = render_text(response_pieces(replies[name])).encode()
            if len(part) < len(full):
                doc.notes.append(f"{name} truncated from {len(full)} to {len(part)} tokens")
            if part.tolist() != full[: len(part)] or not expected_bytes.startswith(
                self.token_bytes.join(part)
            ):
                doc.problems.append(f"{name} does not decode to the raw {name} reply")
        if chosen.tolist() == rejected.tolist():
            doc.problems.append("chosen and rejected are identical")
        return doc


def show(doc: Document, inspector: Inspector, args, color: bool) -> str:
    lines = [
        f"=== {inspector.stage} document {doc.index} of {inspector.size} (raw row {doc.row}) "
        + (
            "MISMATCH: " + "; ".join(doc.problems)
            if doc.problems
            else "OK: decodes to the raw text"
        )
    ]
    lines += [f"    note: {note}" for note in doc.notes]
    for label, text in doc.raw:
        shown = text if len(text) <= args.max_chars else text[: args.max_chars] + " [...]"
        lines.append(f"--- raw {label} ({len(text)} chars):\n{shown}")
    for part in doc.parts:
        ids = part.ids[: args.max_tokens]
        mask = part.mask[: args.max_tokens] if part.mask is not None else None
        more = len(part.ids) - len(ids)
        tail = f" ... ({more} more)" if more else ""
        legend = ", {trained}" if mask is not None and not color else ""
        lines.append(f"--- {part.label}: {len(part.ids)} tokens ([token]{legend})")
        lines.append(render_tokens(inspector.token_bytes, ids, mask, color) + tail)
        lines.append("ids: " + " ".join(map(str, ids.tolist())) + tail)
        if mask is not None:
            lines.append("mask: " + "".join(map(str, mask.tolist())) + tail)
    return "\n".join(lines)


def interactive(inspector: Inspector, args, color: bool) -> bool:
    index, mismatched = args.index or 0, False
    rng = random.Random(0)
    while True:
        doc = inspector.document(index)
        mismatched |= bool(doc.problems)
        print(show(doc, inspector, args, color))
        try:
            command = input("[Enter/n]ext [p]rev [j N] jump [r]andom [q]uit > ").strip().lower()
        except EOFError:
            return mismatched
        if command in ("q", "quit", "exit"):
            return mismatched
        if command in ("", "n", "next"):
            index = min(index + 1, inspector.size - 1)
        elif command in ("p", "prev", "previous"):
            index = max(index - 1, 0)
        elif command in ("r", "random"):
            index = rng.randrange(inspector.size)
        else:
            target = command.removeprefix("j").strip()
            if target.isdigit() and int(target) < inspector.size:
                index = int(target)
            else:
                print(f"unknown command {command!r}, or not a document index < {inspector.size}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python3 -m tokenizer.inspect_tokenized_data",
        description="View tokenized documents beside their raw text; flag any that differ.",
    )
    parser.add_argument(
        "--raw-dataset-dir",
        required=True,
        help="the raw dataset that was tokenized, or its split folder",
    )
    parser.add_argument(
        "--tokenized-dataset-dir",
        required=True,
        help="the tokenize_dataset output folder, or its split folder",
    )
    parser.add_argument(
        "--tokenizer-path", required=True, help="the tokenizer.json used to tokenize it"
    )
    parser.add_argument(
        "--split",
        default=None,
        help="split to view when the two dirs are dataset folders (default train); leave it out "
        "when they are split folders (.../test, as in the original README)",
    )
    parser.add_argument(
        "--index",
        type=int,
        default=None,
        help="first document to show (non-interactive). Default 0",
    )
    parser.add_argument(
        "--num",
        type=int,
        default=None,
        help="how many documents to show (non-interactive). Default 1",
    )
    parser.add_argument(
        "--check-all",
        action="store_true",
        help="check every document of the split; print only mismatches and a summary",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=300, help="tokens shown per part. Default 300"
    )
    parser.add_argument(
        "--max-chars", type=int, default=3000, help="raw characters shown per text. Default 3000"
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="color the tokens (auto: when stdout is a terminal). Default auto",
    )
    args = parser.parse_args(argv)
    for flag in ("index", "num", "max_tokens", "max_chars"):
        value = getattr(args, flag)
        if value is not None and value < (1 if flag != "index" else 0):
            parser.error(
                f"--{flag.replace('_', '-')} must be {'>= 0' if flag == 'index' else '>= 1'}"
            )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    inspector = Inspector(args)
    if inspector.size == 0:
        print(f"the {inspector.split_name} split holds no documents")
        return 0
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    if args.check_all:
        bad = 0
        for index in range(inspector.size):
            doc = inspector.document(index)
            if doc.problems:
                bad += 1
                print(show(doc, inspector, args, color))
        print(f"checked {inspector.size} documents of {inspector.split_name}: {bad} mismatched")
        return 1 if bad else 0
    index = args.index or 0
    if index >= inspector.size:
        raise UserError(f"--index {index} is past the last document ({inspector.size - 1})")
    if args.index is None and args.num is None and sys.stdin.isatty():
        return 1 if interactive(inspector, args, color) else 0
    mismatched = False
    for i in range(index, min(index + (args.num or 1), inspector.size)):
        doc = inspector.document(i)
        mismatched |= bool(doc.problems)
        print(show(doc, inspector, args, color))
    return 1 if mismatched else 0


if __name__ == "__main__":
    run_cli(main)
