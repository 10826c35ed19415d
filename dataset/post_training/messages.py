"""Conversations as lists of messages, shared by the SFT and DPO downloaders.

A message is {"role": "system" | "user" | "assistant", "content": str}. Rows are normalised into
messages by per-format functions that return either the messages or the reason the row cannot be
used; `drop_by_reason` then removes the unusable rows and counts each reason in the manifest.
"""

from collections import Counter

import datasets

from dataset.common import Manifest, WorkDir, counted_filter

ROLES = ("system", "user", "assistant")
MESSAGES = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]


class Unusable(Exception):
    """A row that cannot be used; the message is the reason counted in the manifest."""


def message(role: str, content) -> dict:
    if not isinstance(content, str):
        raise Unusable("non_string_content")
    if not content.strip():
        raise Unusable(f"empty_{role}")
    return {"role": role, "content": content.strip()}


def messages_from(value) -> list[dict]:
    """A validated copy of a list of {role, content} dicts (raises Unusable)."""
    if not isinstance(value, list) or not value:
        raise Unusable("messages_not_a_list")
    result = []
    for item in value:
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise Unusable("bad_role")
        result.append(message(item["role"], item.get("content")))
    return result


def text_field(row: dict, name: str, required: bool = True) -> str:
    """row[name] as a string; a missing one is '' unless required."""
    value = row.get(name)
    if value is None:
        if required:
            raise Unusable(f"missing_{name}")
        return ""
    if not isinstance(value, str):
        raise Unusable(f"non_string_{name}")
    return value


def num_chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def drop_by_reason(
    dataset: datasets.Dataset, manifest: Manifest, group: str, work: WorkDir, num_proc: int
) -> datasets.Dataset:
    """Drop the rows whose `reason` column is set; count every reason; drop the column."""
    reasons: Counter = Counter()
    for batch in dataset.select_columns(["reason"]).iter(batch_size=100_000):
        reasons.update(reason for reason in batch["reason"] if reason)
    kept = counted_filter(
        dataset,
        lambda batch: [not reason for reason in batch["reason"]],
        manifest,
        group,
        "drop_unusable",
        work,
        num_proc,
    )
    manifest.data["filters"][group][-1]["reasons"] = dict(sorted(reasons.items()))
    return kept.remove_columns("reason")
