"""WikiText (Salesforce/wikitext): whole articles rebuilt from its one-line rows, detokenized.

Each row is one line: "" between paragraphs, " = Title = " (one "=" a side) starting an article,
" = = Section = = " inside one. `rebuild_articles` starts an article at each title and joins its
non-empty lines with "\\n"; articles with no text under their headings, and lines before the
first title, are dropped and counted. `detokenize` undoes WikiText's tokenization: " @-@ " ->
"-", " @,@ " -> ",", " @.@ " -> ".", no space before , . ; : ! ? ) ] 's n't 're 've 'll 'd 'm
or after ( [. Quotes are left alone (which side one attaches to is ambiguous).
"""

import functools
import re
from collections import Counter
from collections.abc import Iterable, Iterator

import datasets

from dataset.pipeline import Drop, Part, texts

REPO_ID = "Salesforce/wikitext"
DEFAULT_CONFIG = "wikitext-103-raw-v1"
_TITLE = re.compile(r"^= (?!=)(.*[^=\s])\s*(?<!=) =$")  # "= Title =", never "= = Section = ="
_HEADING = re.compile(r"^(= )+.*( =)+$")
_DETOKENIZE = (
    (re.compile(r" @([-,.])@ "), r"\1"),
    (re.compile(r" ([.,;:!?)\]])"), r"\1"),
    (re.compile(r"([(\[]) "), r"\1"),
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),
)


def detokenize(line: str) -> str:
    for pattern, replacement in _DETOKENIZE:
        line = pattern.sub(replacement, line)
    return line


def rebuild_articles(rows: Iterable[str], counts: Counter) -> Iterator[str]:
    """The articles of WikiText rows, in order, empty ones included; counts stray lines."""
    article: list[str] | None = None
    for row in rows:
        line = (row or "").strip()
        if _TITLE.match(line):
            if article is not None:
                yield "\n".join(article)
            article = [detokenize(line)]
        elif line and article is None:
            counts["lines_before_first_title"] += 1
        elif line:
            article.append(detokenize(line))
    if article is not None:
        yield "\n".join(article)


def article_rows(lines: datasets.Dataset, counts: Counter) -> Iterator[dict]:
    for text in rebuild_articles(texts(lines), counts):
        yield {"text": text}


def article(row: dict) -> dict:
    if all(_HEADING.match(line) for line in row["text"].split("\n")):
        raise Drop("no_text_under_headings")
    return {"text": row["text"], "source": "wikitext"}


def parts(args, run, features) -> list[Part]:
    """Its train, validation and test splits, article by article, capped per split."""
    loaded = run.hub(REPO_ID, ("train", "validation", "test"), ["text"], name=args.wikitext_config)
    result = []
    for name in ("train", "validation", "test"):
        group, counts, lines = f"wikitext/{name}", Counter(), loaded[name]
        articles = functools.partial(article_rows, lines, counts)
        rebuilt = run.generate(group, articles, {"text": features["text"]})
        units = {"unit_in": "lines", "unit_out": "articles"}
        run.count(group, "rebuild_articles", len(lines), len(rebuilt), **units, **counts)
        converted = run.convert(group, rebuilt, article, features)
        result.append(Part(group, converted, name, limit=args.max_wikitext_docs))
    return result
