"""Shared helpers for the tokenizer tests: tiny raw datasets (real column layout) built in-test,
and a small tokenizer trained on them by `tokenizer.train` itself."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets

from tokenizer import train

REPO = Path(__file__).resolve().parent.parent

STORIES = [
    "Once upon a time, there was a little dog named Max who lived in a forest.",
    "Lily found a red ball in the park. She was very happy!\nThen she went home.",
    "The café served crème brûlée; naïve Zoë said “merci” — 東京, 🦊 and 12345 apples.",
    "A user typed <|end|> and <|user|> literally, and <|endoftext|> too.",
    "Tabs\tand  double  spaces,\r\nWindows lines, and trailing space ",
    "",  # empty: skipped and counted
    "x",
]
CONVERSATIONS = [
    [
        {"role": "user", "content": "Name a color of the sky."},
        {"role": "assistant", "content": "Blue."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What do cats say? <|end|>"},
        {"role": "assistant", "content": "Meow, mostly."},
        {"role": "user", "content": "And dogs?"},
        {"role": "assistant", "content": "Woof — 🐶."},
    ],
    [
        {"role": "user", "content": "Write a short story about a dog named Max."},
        {"role": "assistant", "content": "Max ran through the forest and found a stick."},
    ],
]


def pair(question: str, chosen: str, rejected: str, system: str | None = None) -> dict:
    prompt = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


PAIRS = [
    pair("Write about a dog named Max.", "Max the dog ran in the park.", "The cat slept."),
    pair("Where does Lily live?", "Lily lives by the river.", "Lily lives in space.", "Be kind."),
    pair("Say hi.", "Hi!", "Goodbye."),
]


def save_splits(directory: Path, rows_by_split: dict[str, dict[str, list]]) -> Path:
    """`save_to_disk` a DatasetDict with the given columns per split."""
    datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(columns) for name, columns in rows_by_split.items()}
    ).save_to_disk(str(directory))
    return directory


def pre_training_dataset(directory: Path, texts=None, copies: int = 3) -> Path:
    texts = list(texts if texts is not None else STORIES)
    train_texts = texts * copies
    split = {"text": train_texts, "source": ["test"] * len(train_texts)}
    small = {"text": texts, "source": ["test"] * len(texts)}
    return save_splits(directory, {"train": split, "validation": small, "test": small})


def records_to_columns(records: list[dict]) -> dict[str, list]:
    return {key: [record[key] for record in records] for key in records[0]}


def sft_dataset(directory: Path, conversations=None) -> Path:
    conversations = conversations or CONVERSATIONS
    columns = {"messages": conversations}
    return save_splits(directory, {"train": columns, "validation": columns, "test": columns})


def dpo_dataset(directory: Path, pairs=None) -> Path:
    columns = records_to_columns(pairs or PAIRS)
    return save_splits(directory, {"train": columns, "validation": columns, "test": columns})


def run_main(main, argv: list[str]) -> tuple[int, str]:
    """Call a CLI `main(argv)` in-process; returns (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def run_cli(module: str, *argv, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m module argv` from the repository root, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        **kwargs,
    )


def train_tokenizer(raw_dir: Path, path: Path, vocab_size: int = 512) -> Path:
    """Train with our own trainer, quietly."""
    run_main(
        train.main,
        [
            "--dataset-dir",
            raw_dir,
            "--output-path",
            path,
            "--vocab-size",
            vocab_size,
            "--overwrite",
        ],
    )
    return path


def corpus_for_tokenizer(directory: Path) -> Path:
    """Stories plus the chat texts, so one small tokenizer serves every stage's tests."""
    chat = [m["content"] for c in CONVERSATIONS for m in c]
    chat += [
        m["content"] for p in PAIRS for part in ("prompt", "chosen", "rejected") for m in p[part]
    ]
    return pre_training_dataset(directory, [t for t in STORIES if t] + chat, copies=5)


def all_stages_tokenizer(folder: Path) -> Path:
    """`folder/tokenizer.json`: 512 tokens trained on `corpus_for_tokenizer`, for every stage."""
    corpus_for_tokenizer(folder / "corpus")
    return train_tokenizer(folder / "corpus", folder / "tokenizer.json", vocab_size=512)


def tokenize(raw, out, tokenizer_path, *extra, num_proc=1) -> str:
    """Run tokenize_dataset in-process (it must succeed); returns what it printed."""
    from tokenizer import tokenize_dataset

    argv = ["--dataset-dir", raw, "--tokenizer-path", tokenizer_path, "--output-dir", out]
    code, stdout = run_main(tokenize_dataset.main, [*argv, "--num-proc", num_proc, *extra])
    assert code == 0
    return stdout


def start_cli(module: str, *argv) -> subprocess.Popen:
    """Start `python -m module argv` in its own process group (like a job in a terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *map(str, argv)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_when(process: subprocess.Popen, condition, timeout: float = 60) -> None:
    """`kill -9` the process group as soon as `condition()` holds (no cleanup code runs)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=timeout)
