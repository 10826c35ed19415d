"""TinyStories (roneneldan/TinyStories): load, repair mojibake, drop bad and duplicate stories.

Some stories hold UTF-8 that was once decoded as Windows-1252 ("mojibake"): "donâ€™t" for
"don’t", "â€œHi!â€" for "“Hi!”", "cafÃ©" for "café". `repair_mojibake` re-encodes each such
run to bytes and decodes it as UTF-8 again; a run whose last byte was lost (a lone "â€", once
the closing quote ”) becomes ”; text garbled twice gets a second pass. Stories that still hold
mojibake afterwards are dropped and counted.

v1 (default) is the Hub's parquet data, one story per row. v2 (`--tinystories-version v2`) is
the TinyStoriesV2-GPT4 text files (GPT-4 stories only), read line by line and regrouped into
stories at their `<|endoftext|>` lines. TinyStories has no test split: a seeded fraction of its
validation split becomes test.
"""

import re
from collections.abc import Iterable, Iterator

import datasets

from common.errors import UserError
from dataset.common import (
    Manifest,
    WorkDir,
    carve,
    from_generator,
    hub_input,
    load_hub,
    processes,
    require_columns,
)
from dataset.pre_training.cleaning import (
    EMPTY,
    OK,
    REPAIRED,
    UNREPAIRABLE,
    cap,
    digest,
    keep_clean_unique,
)

REPO_ID = "roneneldan/TinyStories"
V2_FILES = {"train": "TinyStoriesV2-GPT4-train.txt", "validation": "TinyStoriesV2-GPT4-valid.txt"}
V2_SEPARATOR = "<|endoftext|>"
SOURCE = "tinystories"
HUB_SPLITS = ("train", "validation")  # no test split on the Hub

# Characters that Windows-1252 shows for the continuation bytes 0x80-0xBF of UTF-8 (the C1
# controls stand for the five bytes Windows-1252 leaves undefined).
_CONTINUATION = (
    "\u0080-\u00bf\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152"
    "\u017d\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u017e\u0178"
)
_C = f"[{_CONTINUATION}]"
_MOJIBAKE = re.compile(f"[\u00c2-\u00df]{_C}|[\u00e0-\u00ef]{_C}{_C}?|[\u00f0-\u00f4]{_C}{{3}}")
# Mojibake that survived the repair: a lead character that only ever shows up in mojibake of
# English text (Â Ã for Latin-1 letters, â for punctuation, ð for emoji) + a continuation.
_LEFTOVER = re.compile(f"[\u00c2\u00c3\u00e2\u00f0]{_C}")
MAX_PASSES = 3  # text encoded wrongly twice needs two passes


def _to_bytes(text: str) -> bytes:
    """Undo a Windows-1252 decode; undefined bytes survive as their Latin-1 control characters."""
    out = bytearray()
    for char in text:
        try:
            out += char.encode("cp1252")
        except UnicodeEncodeError:
            out.append(ord(char))  # the C1 controls \x81 \x8d \x8f \x90 \x9d
    return bytes(out)


def _repair_run(match: re.Match) -> str:
    run = match.group(0)
    try:
        return _to_bytes(run).decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        return "\u201d" if run == "\u00e2\u20ac" else run  # a lone "â€" lost the byte of ”


def repair_mojibake(text: str) -> tuple[str, bool]:
    """(repaired text, whether it is clean now): "donâ€™t" -> ("don’t", True)."""
    if text.isascii():  # most stories: nothing to repair, and this check is cheap
        return text, True
    for _ in range(MAX_PASSES):
        repaired = _MOJIBAKE.sub(_repair_run, text)
        if repaired == text:
            break
        text = repaired
    return text, _LEFTOVER.search(text) is None


def _clean_batch(batch: dict) -> dict:
    texts, statuses = [], []
    for text in batch["text"]:
        text = (text or "").strip()
        repaired, clean = repair_mojibake(text)
        status = OK if repaired == text else REPAIRED if clean else UNREPAIRABLE
        texts.append(repaired.strip())
        statuses.append(EMPTY if not text else status)
    return {
        "text": texts,
        "source": [SOURCE] * len(texts),
        "status": statuses,
        "digest": [digest(text) for text in texts],
    }


def clean(dataset: datasets.Dataset, group: str, work: WorkDir, num_proc: int) -> datasets.Dataset:
    """Strip and repair mojibake; columns text, source, status and digest (see cleaning.py)."""
    return dataset.map(
        _clean_batch, batched=True, remove_columns=dataset.column_names,
        num_proc=processes(dataset, num_proc), **work.cache(f"{group}-clean"),
        desc=f"{group}: repair",
    )  # fmt: skip


def v2_stories(lines: Iterable[str]) -> Iterator[str]:
    """Regroup the lines of a TinyStoriesV2 text file into stories at `<|endoftext|>` lines."""
    story: list[str] = []
    for line in lines:
        if line.strip() == V2_SEPARATOR:
            yield "\n".join(story)
            story = []
        else:
            story.append(line)
    if story:
        yield "\n".join(story)


def _regroup_v2(split: datasets.Dataset, name: str, work: WorkDir) -> datasets.Dataset:
    def generate():
        lines = (text for batch in split.iter(batch_size=10_000) for text in batch["text"])
        for story in v2_stories(lines):
            yield {"text": story}

    features = datasets.Features({"text": datasets.Value("string")})
    return from_generator(generate, features, work, f"tinystories-v2-{name}", split=name)


def load(version: str, cache_dir: str | None, manifest: Manifest, work: WorkDir) -> dict:
    """The raw train and validation splits (one story per row) from the Hub."""
    if version == "v2":
        loaded = load_hub(REPO_ID, data_files=dict(V2_FILES), cache_dir=cache_dir)
        manifest.add_input(hub_input(REPO_ID, loaded, data_files=V2_FILES, version="v2"))
    else:
        loaded = load_hub(REPO_ID, cache_dir=cache_dir)
        manifest.add_input(hub_input(REPO_ID, loaded, version="v1"))
    for name in HUB_SPLITS:
        if name not in loaded:
            raise UserError(f"{REPO_ID} has no {name} split (it has {', '.join(loaded)})")
        require_columns(loaded[name], ["text"], f"{REPO_ID} {name}")
    if version == "v2":
        return {name: _regroup_v2(loaded[name], name, work) for name in HUB_SPLITS}
    return {name: loaded[name] for name in HUB_SPLITS}


def tinystories_splits(
    version: str,
    test_fraction: float,
    max_docs: int | None,
    seed: int,
    cache_dir: str | None,
    manifest: Manifest,
    work: WorkDir,
    num_proc: int,
) -> dict[str, datasets.Dataset]:
    raw = load(version, cache_dir, manifest, work)
    cleaned = {
        name: clean(split, f"{SOURCE}/{name}", work, num_proc) for name, split in raw.items()
    }
    unique = keep_clean_unique(cleaned, manifest, SOURCE, repaired=True)
    validation, test = carve(unique["validation"], test_fraction, seed)
    manifest.note("tinystories_test", f"{len(test)} rows carved (seed {seed}) from validation")
    splits = {"train": unique["train"], "validation": validation, "test": test}
    return {
        name: cap(split, max_docs, manifest, f"{SOURCE}/{name}") for name, split in splits.items()
    }
