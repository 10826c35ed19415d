r"""Look at tokenized documents beside their raw text, and flag any that do not decode back to it.

    python3 -m tokenizer.inspect_tokenized_data --raw-dataset-dir data/pre_training/raw \
        --tokenized-dataset-dir data/pre_training/tokenized \
        --tokenizer-path data/tokenizer/tokenizer.json
    python3 -m tokenizer.inspect_tokenized_data --raw-dataset-dir data/sample/pre_training/raw \
        --tokenized-dataset-dir data/sample/pre_training/tokenized \
        --tokenizer-path data/sample/tokenizer/tokenizer.json --split validation --index 0 --num 3

On a terminal (without --index/--num) it asks: Enter or `n` next, `p` previous, `j N` (or `N`)
jump, `r` random, `q` quit. Tokens show as `[tok]` (their exact bytes), `{tok}` where SFT trains.
A document is a MISMATCH (exit 1) when its tokens do not decode to its raw text as its stage
renders it (a cut part must be the start of its reply or the end of its prompt) or differ from
a fresh encoding, an SFT loss mask included.
"""

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from common.atomic import sha256_file
from common.errors import ArgumentParser, UserError, run_cli
from tokenizer import raw_data
from tokenizer.encoding import load_tokenizer
from tokenizer.token_bytes import token_bytes
from tokenizer.tokenized_data import SPLITS, open_split

RESET, TRAINED, SPECIAL = "\033[0m", "\033[1;32m", "\033[35m"  # bold green, magenta
BACKGROUNDS = ("\033[48;5;236m", "\033[48;5;239m")  # alternate, so boundaries show


def tokenized_split_folder(path: Path, split: str | None) -> tuple[Path, str]:
    """(split folder, split name): --tokenized-dataset-dir is a tokenize_dataset output (--split
    picks the split, train by default) or one of its split folders (as the original README has
    it; the split is then the folder's name)."""
    if (path / "meta.json").is_file():
        if split not in (None, path.name):
            raise UserError(
                f"--tokenized-dataset-dir {path} is the {path.name!r} split folder, but --split "
                f"is {split!r}; pass its parent folder, or leave --split out"
            )
        return path, path.name
    split = split or "train"
    if not (path / split).is_dir():
        raise UserError(f"{path / split} not found; is --tokenized-dataset-dir tokenized data?")
    return path / split, split


def raw_split(folder: Path, name: str):
    """The raw split `name` of --raw-dataset-dir: a dataset folder or a split folder."""
    raw = raw_data.load_datasets(folder)
    if name in raw:
        return raw[name]
    if (folder / "state.json").is_file() and folder.name not in SPLITS:
        return raw[folder.name]  # a split folder by another name
    raise UserError(f"--raw-dataset-dir {folder} has no split {name!r} (it has {', '.join(raw)})")


class Inspector:
    """The documents of one tokenized split beside their raw rows (`document(i)`)."""

    def __init__(self, args):
        self.args, self.tokenizer = args, load_tokenizer(args.tokenizer_path)
        self.texts = token_bytes(self.tokenizer)
        for token_id, text in enumerate(self.texts):
            if text is None:  # an added token, shown by its name
                name = self.tokenizer.id_to_token(token_id) or f"<unknown id {token_id}>"
                self.texts[token_id] = name.encode()
        directory, self.name = tokenized_split_folder(Path(args.tokenized_dataset_dir), args.split)
        self.split = open_split(directory)
        self.stage, self.size = self.split.stage, int(self.split.meta["num_documents"])
        if self.split.meta.get("tokenizer_sha256") != sha256_file(args.tokenizer_path):
            raise UserError(f"{directory} was made with another tokenizer (sha256 differs)")
        self.raw = raw_split(Path(args.raw_dataset_dir), self.name)
        raw_data.check_columns({self.name: self.raw}, self.stage, args.raw_dataset_dir)
        self.max_length = self.split.meta.get("stats", {}).get("max_length")
        self.rows = self.split.source_rows  # the raw row of each document
        if self.rows is None or (len(self.rows) and int(self.rows.max()) >= len(self.raw)):
            raise UserError(f"{directory} does not match --raw-dataset-dir (source rows differ)")

    def token_text(self, token_id) -> bytes:
        """A token's exact bytes; an added token's name."""
        token_id = int(token_id)
        return self.texts[token_id] if token_id < len(self.texts) else b"<unknown id>"

    def join(self, ids) -> bytes:
        return b"".join(map(self.token_text, ids))

    def document(self, index: int) -> tuple[list[str], list[str]]:
        """The lines that show document `index`, and what is wrong with it."""
        row = int(self.rows[index])
        record, problems, notes = self.raw[row], [], []
        if self.stage == "dpo":
            raw, parts = self.check_pair(index, record, problems, notes)
        else:
            start, end = (int(x) for x in self.split.doc_offsets[index : index + 2])
            ids = np.asarray(self.split.tokens[start:end])
            if self.stage == "pre_training":
                raw, parts = [("text", record["text"])], [("tokens", ids, None)]
                self.check_text(record["text"], ids, problems)
            else:
                mask = np.asarray(self.split.loss_mask[start:end])
                raw = [(m["role"], m["content"]) for m in record["messages"]]
                parts = [("tokens", ids, mask)]
                self.check_conversation(record["messages"], ids, mask, problems, notes)
        verdict = "MISMATCH: " + "; ".join(problems) if problems else "OK: decodes to the raw text"
        lines = [f"=== {self.stage} document {index} of {self.size} (raw row {row}) {verdict}"]
        lines += [f"    note: {note}" for note in notes]
        return lines + self.show(raw, parts), problems

    def check_text(self, text: str, ids: np.ndarray, problems: list) -> None:
        bos = self.tokenizer.document("")  # [BOS], or nothing
        if ids[: len(bos)].tolist() != bos:
            problems.append(f"does not start with {self.tokenizer.tokens.get('bos_token')}")
        body = ids[len(bos) :].tolist()
        if set(body) & self.tokenizer.special_ids:
            problems.append("holds a special token inside the text")
        decoded = self.tokenizer.decode(body, skip_special_tokens=False)
        if decoded != text:
            problems.append(f"decodes to {decoded[:80]!r}... not the raw text")
        elif body != self.tokenizer.encode_text(text):
            problems.append("differs from a fresh encoding of the raw text")

    def check_conversation(self, messages, ids, mask, problems: list, notes: list) -> None:
        rendered, decoded = self.tokenizer.render(messages).encode(), self.join(ids)
        truncated = len(decoded) < len(rendered) and len(ids) == self.max_length
        if decoded != rendered and not (truncated and rendered.startswith(decoded)):
            problems.append("does not decode to the rendered conversation")
        fresh_ids, fresh_mask = self.tokenizer.conversation(messages)
        wrong = np.flatnonzero(mask != fresh_mask[: len(ids)])
        if ids.tolist() != fresh_ids[: len(ids)]:
            problems.append("differs from a fresh encoding of the conversation")
        elif len(wrong):
            problems.append(f"loss mask is wrong from token {int(wrong[0])} on")
        if truncated:
            notes.append(f"truncated to --max-length {self.max_length}")
        notes.append(f"{int(mask.sum())} trained tokens of {len(ids)}")

    def check_pair(self, index: int, record: dict, problems: list, notes: list):
        """(raw texts, token parts) of pair `index`, its prompt and replies checked."""
        p, c, r, e = (int(x) for x in self.split.pair_offsets[index])
        prompt, chosen, rejected = (
            np.asarray(self.split.tokens[a:b]) for a, b in ((p, c), (c, r), (r, e))
        )
        messages = record["prompt"]
        self.check_prompt(messages, prompt, problems, notes)
        replies = {name: record[name][0]["content"] for name in ("chosen", "rejected")}
        self.check_reply("chosen", messages, replies["chosen"], chosen, problems, notes)
        self.check_reply("rejected", messages, replies["rejected"], rejected, problems, notes)
        if chosen.tolist() == rejected.tolist():
            problems.append("chosen and rejected are identical")
        raw = [(f"prompt {m['role']}", m["content"]) for m in messages] + list(replies.items())
        return raw, [
            ("prompt", prompt, None),
            ("chosen", chosen, None),
            ("rejected", rejected, None),
        ]

    def check_prompt(self, messages, ids, problems: list, notes: list) -> None:
        full = self.tokenizer.prompt(messages)
        rendered = self.tokenizer.render(messages, add_generation_prompt=True).encode()
        if len(ids) < len(full):  # cut: the first token, then the prompt's end
            notes.append(f"prompt truncated from {len(full)} to {len(ids)} tokens")
            kept = full[:1] + full[len(full) - len(ids) + 1 :]
            ok = ids.tolist() == kept and rendered.endswith(self.join(ids[1:]))
        else:
            ok = ids.tolist() == full and self.join(ids) == rendered
        if not ok:
            problems.append("prompt does not match the rendered prompt messages")

    def check_reply(self, name: str, messages, reply: str, ids, problems: list, notes: list):
        full = self.tokenizer.reply(messages, reply)
        if len(ids) < len(full):
            notes.append(f"{name} truncated from {len(full)} to {len(ids)} tokens")
        pieces = self.tokenizer.reply_pieces(messages, reply)
        text = "".join(piece.text for piece in pieces).encode()
        if ids.tolist() != full[: len(ids)] or not text.startswith(self.join(ids)):
            problems.append(f"{name} does not decode to the raw {name} reply")

    def show(self, raw: list, parts: list) -> list[str]:
        args, lines = self.args, []
        for label, text in raw:
            shown = text if len(text) <= args.max_chars else text[: args.max_chars] + " [...]"
            lines.append(f"--- raw {label} ({len(text)} chars):\n{shown}")
        for label, ids, mask in parts:
            more = f" ... ({len(ids) - args.max_tokens} more)" if len(ids) > args.max_tokens else ""
            legend = ", {trained}" if mask is not None and not args.color else ""
            lines.append(f"--- {label}: {len(ids)} tokens ([token]{legend})")
            ids = ids[: args.max_tokens]
            mask = None if mask is None else mask[: args.max_tokens]
            lines.append(self.render(ids, mask) + more)
            lines.append("ids: " + " ".join(map(str, ids.tolist())) + more)
            if mask is not None:
                lines.append(f"mask: {''.join(map(str, mask.tolist()))}{more}")
        return lines

    def render(self, ids, mask) -> str:
        """One line of tokens: `[tok]`, `{tok}` where the mask is 1 (or, with --color, colors)."""
        out = []
        for position, token_id in enumerate(ids):
            text = self.token_text(token_id).decode("utf-8", errors="backslashreplace")
            text = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
            trained = mask is not None and mask[position]
            if self.args.color:
                special = token_id in self.tokenizer.special_ids
                style = TRAINED if trained else SPECIAL if special else ""
                out.append(f"{BACKGROUNDS[position % 2]}{style}{text}{RESET}")
            else:
                out.append(f"{{{text}}}" if trained else f"[{text}]")
        return "".join(out)


def interactive(inspector: Inspector, index: int) -> bool:
    """Show documents as the reader asks (module docstring); True if any mismatched."""
    mismatched, rng = False, random.Random(0)
    while True:
        lines, problems = inspector.document(index)
        mismatched |= bool(problems)
        print("\n".join(lines))
        try:
            command = input("[Enter/n]ext [p]rev [j N] jump [r]andom [q]uit > ").strip().lower()
        except EOFError:
            return mismatched
        target = command.removeprefix("j").strip()
        if command in ("q", "quit", "exit"):
            return mismatched
        if command in ("", "n", "next", "p", "prev", "previous"):
            step = -1 if command.startswith("p") else 1
            index = min(max(index + step, 0), inspector.size - 1)
        elif command in ("r", "random"):
            index = rng.randrange(inspector.size)
        elif target.isdigit() and int(target) < inspector.size:
            index = int(target)
        else:
            print(f"unknown command {command!r}, or not a document index < {inspector.size}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python3 -m tokenizer.inspect_tokenized_data",
        description="View tokenized documents beside their raw text; flag any that differ.",
    )
    add = parser.add_argument
    add("--raw-dataset-dir", required=True, help="the raw dataset tokenized, or a split folder")
    add("--tokenized-dataset-dir", required=True, help="its tokenized folder, or a split folder")
    add("--tokenizer-path", required=True, help="the tokenizer.json used to tokenize it")
    add("--split", help="split to view (default train); leave it out for split folders")
    add("--index", type=int, help="first document to show (non-interactive). Default 0")
    add("--num", type=int, help="how many documents to show (non-interactive). Default 1")
    add("--check-all", action="store_true", help="check every document; print only mismatches")
    add("--max-tokens", type=int, default=300, help="tokens shown per part. Default 300")
    add("--max-chars", type=int, default=3000, help="raw characters shown per text. Default 3000")
    color = "color the tokens (auto: when stdout is a terminal). Default auto"
    add("--color", choices=("auto", "always", "never"), default="auto", help=color)
    args = parser.parse_args(argv)
    for flag, low in (("index", 0), ("num", 1), ("max_tokens", 1), ("max_chars", 1)):
        if getattr(args, flag) is not None and getattr(args, flag) < low:
            parser.error(f"--{flag.replace('_', '-')} must be >= {low}")
    args.color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    inspector = Inspector(args)
    if inspector.size == 0:
        print(f"the {inspector.name} split holds no documents")
        return 0
    if args.check_all:
        bad = 0
        for index in range(inspector.size):
            lines, problems = inspector.document(index)
            if problems:
                bad += 1
                print("\n".join(lines))
        print(f"checked {inspector.size} documents of {inspector.name}: {bad} mismatched")
        return 1 if bad else 0
    index = args.index or 0
    if index >= inspector.size:
        raise UserError(f"--index {index} is past the last document ({inspector.size - 1})")
    if args.index is None and args.num is None and sys.stdin.isatty():
        return 1 if interactive(inspector, index) else 0
    mismatched = False
    for i in range(index, min(index + (args.num or 1), inspector.size)):
        lines, problems = inspector.document(i)
        mismatched |= bool(problems)
        print("\n".join(lines))
    return 1 if mismatched else 0


if __name__ == "__main__":
    run_cli(main)
