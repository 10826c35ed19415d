"""TinyStories (roneneldan/TinyStories): stories with their mojibake repaired.

Some stories hold UTF-8 once decoded as Windows-1252 ("donâ€™t" for "don’t"): `repair_mojibake`
decodes each such run again (a lone "â€" that lost its last byte becomes ”); stories still holding
mojibake are dropped and counted. v2 (`--tinystories-version v2`) reads the TinyStoriesV2-GPT4
text files, regrouped into stories at their `<|endoftext|>` lines. A seeded share of the
validation split (--tinystories-test-fraction) becomes test.
"""

import functools
import re
from collections.abc import Iterable, Iterator

import datasets

from dataset.pipeline import Drop, Part, texts

REPO_ID = "roneneldan/TinyStories"
V2_FILES = {"train": "TinyStoriesV2-GPT4-train.txt", "validation": "TinyStoriesV2-GPT4-valid.txt"}
V2_SEPARATOR = "<|endoftext|>"
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


def story(row: dict) -> dict:
    """A TinyStories row -> {text, source}: stripped and repaired (raises Drop)."""
    text, clean = repair_mojibake((row["text"] or "").strip())
    if not text:
        raise Drop("empty")
    if not clean:
        raise Drop("unrepairable_mojibake")
    return {"text": text.strip(), "source": "tinystories"}


def v2_stories(lines: Iterable[str]) -> Iterator[str]:
    """Regroup the lines of a TinyStoriesV2 text file into stories at `<|endoftext|>` lines."""
    story_lines: list[str] = []
    for line in lines:
        if line.strip() == V2_SEPARATOR:
            yield "\n".join(story_lines)
            story_lines = []
        else:
            story_lines.append(line)
    if story_lines:
        yield "\n".join(story_lines)


def v2_rows(lines: datasets.Dataset) -> Iterator[dict]:
    for story in v2_stories(texts(lines)):
        yield {"text": story}


def parts(args, run, features) -> list[Part]:
    """Train (all of it) and validation (a share carved off into test), capped per split."""
    v2 = args.tinystories_version == "v2"
    extra = {"data_files": dict(V2_FILES)} if v2 else {}
    loaded = run.hub(REPO_ID, ("train", "validation"), ["text"], **extra)
    result = []
    for name in ("train", "validation"):
        rows = loaded[name]
        if v2:
            stories = functools.partial(v2_rows, rows)
            rows = run.generate(f"tinystories-v2-{name}", stories, {"text": features["text"]})
        carve = {"test": args.tinystories_test_fraction} if name == "validation" else {}
        group = f"tinystories/{name}"
        converted = run.convert(group, rows, story, features)
        result.append(Part(group, converted, name, carve, args.max_tinystories_docs, dedupe=True))
    return result
