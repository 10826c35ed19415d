"""Check a model's answer against the constraints of a sample-world instruction.

`constraints` (JSON, on every sample SFT row and DPO pair) may hold: `include`, words the answer
must mention (the name, animal and place, say); `exclude`, words it must not (the other places,
for a question); `max_sentences`; and `task` ("story", "qa"), a label. A word is mentioned when
it stands as a whole word, in any case, perhaps with a plural "s" or "es" ("dog" matches "Dogs",
not "hotdog").

    >>> satisfies('{"include": ["Max", "dog"], "max_sentences": 2}', "Max was a dog. He ran.")
    True
"""

import functools
import json
import re

KNOWN_KEYS = {"include", "exclude", "max_sentences", "task"}

# A sentence ends at . ! or ? (plus an optional closing quote) followed by the end of the text or
# by a new sentence (an upper-case letter or an opening quote); so '"Help?" asked Max.' is one.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’]?(?=\s*$|\s+[\"“A-Z])")


def count_sentences(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    # Text that trails off without a final full stop still counts its last sentence.
    return len(ends) + (0 if ends and ends[-1] == len(text) else 1)


@functools.lru_cache(maxsize=4096)
def _word_pattern(word: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?:s|es)?(?![A-Za-z])", re.IGNORECASE)


def mentions(text: str, word: str) -> bool:
    return _word_pattern(word).search(text) is not None


def violations(constraints: dict | str, response: str) -> list[str]:
    """Every way `response` breaks `constraints`, as short readable strings (empty: it passes)."""
    if isinstance(constraints, str):
        constraints = json.loads(constraints)
    unknown = set(constraints) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown constraint keys {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    problems = [
        f"missing {word!r}"
        for word in constraints.get("include", [])
        if not mentions(response, word)
    ]
    problems += [
        f"mentions {word!r}" for word in constraints.get("exclude", []) if mentions(response, word)
    ]
    limit = constraints.get("max_sentences")
    if limit is not None and count_sentences(response) > limit:
        problems.append(f"{count_sentences(response)} sentences > {limit}")
    if not response.strip():
        problems.append("empty answer")
    return problems


def satisfies(constraints_json: str, response: str) -> bool:
    """True when `response` meets every constraint in `constraints_json`."""
    return not violations(constraints_json, response)
