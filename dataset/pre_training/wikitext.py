"""WikiText (Salesforce/wikitext): rebuild whole articles from its one-line rows and detokenize.

On the Hub every WikiText row is one line of the original files:

    ""                                   (empty rows between paragraphs)
    " = Robert Boulter = \\n"             <- an article title: exactly one "=" on each side
    " Robert Boulter is an English film , television and theatre actor ... \\n"
    " = = Career = = \\n"                 <- a section, part of the same article
    " In 2006 @-@ 07 , Boulter starred ... \\n"

`rebuild_articles` starts a new article at each title line and joins the article's non-empty
lines with "\\n" (title and section lines kept, stripped: "= Robert Boulter =", "= = Career = =");
articles without any text under their headings are dropped and counted.

`detokenize` undoes WikiText's tokenization: " @-@ " -> "-", " @,@ " -> ",", " @.@ " -> ".",
no space before , . ; : ! ? ) ] or 's n't 're 've 'll 'd 'm, none after ( [. Quotes are left
alone (which side a quote attaches to is ambiguous).
"""

import re
from collections import Counter
from collections.abc import Iterable, Iterator

import datasets

from common.errors import UserError
from dataset.common import (
    Manifest,
    WorkDir,
    from_generator,
    hub_input,
    load_hub,
    require_columns,
)
from dataset.pre_training.cleaning import cap

REPO_ID = "Salesforce/wikitext"
DEFAULT_CONFIG = "wikitext-103-raw-v1"
SOURCE = "wikitext"

_TITLE = re.compile(r"^= (?!=)(.*[^=\s])\s*(?<!=) =$")  # "= Title =", never "= = Section = ="
_HEADING = re.compile(r"^(= )+.*( =)+$")
_DETOKENIZE = (
    (re.compile(r" @([-,.])@ "), r"\1"),
    (re.compile(r" ([.,;:!?)\]])"), r"\1"),
    (re.compile(r"([(\[]) "), r"\1"),
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),
)


def is_title(line: str) -> bool:
    return _TITLE.match(line.strip()) is not None


def is_heading(line: str) -> bool:
    """A title or a section line."""
    return _HEADING.match(line.strip()) is not None


def detokenize(line: str) -> str:
    for pattern, replacement in _DETOKENIZE:
        line = pattern.sub(replacement, line)
    return line


def rebuild_articles(rows: Iterable[str], counts: Counter) -> Iterator[str]:
    """Articles from WikiText rows, in order. Counts articles, empty ones and stray lines."""
    article: list[str] | None = None
    for row in rows:
        line = (row or "").strip()
        if not line:
            continue
        if is_title(line):
            if article is not None:
                yield from _finish(article, counts)
            article = [detokenize(line)]
        elif article is None:
            counts["lines_before_first_title"] += 1
        else:
            article.append(detokenize(line))
    if article is not None:
        yield from _finish(article, counts)


def _finish(article: list[str], counts: Counter) -> Iterator[str]:
    counts["articles"] += 1
    if all(is_heading(line) for line in article):
        counts["empty_articles"] += 1
        return
    yield "\n".join(article)


def articles_dataset(
    split: datasets.Dataset, group: str, manifest: Manifest, work: WorkDir
) -> datasets.Dataset:
    """One row per article (columns text, source), streamed from `split` in order."""
    counts: Counter = Counter()

    def generate():
        rows = (text for batch in split.iter(batch_size=10_000) for text in batch["text"])
        for article in rebuild_articles(rows, counts):
            yield {"text": article, "source": SOURCE}

    features = datasets.Features(
        {"text": datasets.Value("string"), "source": datasets.Value("string")}
    )
    articles = from_generator(generate, features, work, group)
    manifest.count(
        group,
        "rebuild_articles",
        len(split),
        counts["articles"],
        unit_in="lines",
        unit_out="articles",
        lines_before_first_title=counts["lines_before_first_title"],
    )
    manifest.count(group, "drop_empty", counts["articles"], len(articles))
    return articles


def wikitext_splits(
    config: str, max_docs: int | None, cache_dir: str | None, manifest: Manifest, work: WorkDir
) -> dict[str, datasets.Dataset]:
    loaded = load_hub(REPO_ID, name=config, cache_dir=cache_dir)
    manifest.add_input(hub_input(REPO_ID, loaded, config=config))
    splits = {}
    for name in ("train", "validation", "test"):
        if name not in loaded:
            raise UserError(f"{REPO_ID} {config} has no {name} split (it has {', '.join(loaded)})")
        require_columns(loaded[name], ["text"], f"{REPO_ID} {config} {name}")
        group = f"{SOURCE}/{name}"
        articles = articles_dataset(loaded[name], group, manifest, work)
        splits[name] = cap(articles, max_docs, manifest, group)
    return splits
