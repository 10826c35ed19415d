"""Document cleaning shared by the pre-training sources: strip, drop empty, drop exact duplicates.

One batched `map` gives every document a `status` (kept, repaired, unrepairable, empty) and a
64-bit `digest`; the rows to keep are then chosen with NumPy over those two columns, so finding
duplicates among millions of documents costs a few bytes per document, and the text is copied
once by a single `select`.
"""

import hashlib

import datasets
import numpy as np

from dataset.common import Manifest, WorkDir, processes

OK, REPAIRED, UNREPAIRABLE, EMPTY = range(4)  # the `status` column


def digest(text: str) -> int:
    """A signed 64-bit fingerprint of `text` (fits an Arrow int64 column)."""
    hashed = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(hashed, "big", signed=True)


def _strip_batch(batch: dict, source: str) -> dict:
    texts = [(text or "").strip() for text in batch["text"]]
    return {
        "text": texts,
        "source": [source] * len(texts),
        "status": [OK if text else EMPTY for text in texts],
        "digest": [digest(text) for text in texts],
    }


def strip_and_fingerprint(
    dataset: datasets.Dataset, source: str, group: str, work: WorkDir, num_proc: int
) -> datasets.Dataset:
    """Columns text (stripped), source, status and digest."""
    return dataset.map(
        _strip_batch, batched=True, fn_kwargs={"source": source},
        remove_columns=dataset.column_names, num_proc=processes(dataset, num_proc),
        **work.cache(f"{group}-strip"), desc=f"{group}: strip",
    )  # fmt: skip


def _column(dataset: datasets.Dataset, name: str) -> np.ndarray:
    if len(dataset) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(dataset.with_format("numpy", columns=[name])[:][name], dtype=np.int64)


def keep_clean_unique(
    splits: dict[str, datasets.Dataset], manifest: Manifest, source: str, repaired: bool = False
) -> dict[str, datasets.Dataset]:
    """Drop empty (and unrepairable) documents, then every exact duplicate but the first.

    Splits are searched in the order given, so a validation document that also appears in train
    is dropped from validation: no held-out document was trained on. Every step's rows in and
    out go into the manifest under "<source>/<split>". Drops the status and digest columns.
    repaired: the statuses come from a mojibake repair (record that step too).
    """
    statuses = {name: _column(split, "status") for name, split in splits.items()}
    digests = {name: _column(split, "digest") for name, split in splits.items()}
    usable = np.concatenate([s <= REPAIRED for s in statuses.values()])
    all_digests = np.concatenate(list(digests.values()))
    usable_rows = np.flatnonzero(usable)
    _, first = np.unique(all_digests[usable_rows], return_index=True)
    keep = np.zeros(len(all_digests), dtype=bool)
    keep[usable_rows[first]] = True

    result, start = {}, 0
    for name, split in splits.items():
        status, split_keep = statuses[name], keep[start : start + len(split)]
        start += len(split)
        group = f"{source}/{name}"
        rows = len(split)
        after_empty = rows - int((status == EMPTY).sum())
        manifest.count(group, "drop_empty", rows, after_empty)
        after_repair = after_empty - int((status == UNREPAIRABLE).sum())
        if repaired:
            manifest.count(
                group, "drop_unrepairable_mojibake", after_empty, after_repair,
                repaired_mojibake=int((status == REPAIRED).sum()),
            )  # fmt: skip
        manifest.count(group, "drop_duplicates", after_repair, int(split_keep.sum()))
        kept = split.select(np.flatnonzero(split_keep))
        result[name] = kept.remove_columns(["status", "digest"])
    return result


def cap(
    dataset: datasets.Dataset, limit: int | None, manifest: Manifest, group: str
) -> datasets.Dataset:
    """The first `limit` rows (None: all)."""
    if limit is None or len(dataset) <= limit:
        return dataset
    capped = dataset.select(range(limit))
    manifest.count(group, f"cap_{limit}", len(dataset), len(capped))
    return capped
