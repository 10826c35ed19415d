"""The on-disk format of tokenized data: flat memory-mapped arrays plus `meta.json`, per split.

A tokenized dataset is a folder with one sub-folder per split (`train/`, `validation/`, `test/`).
Each split folder holds little-endian arrays and a `meta.json` that describes them:

| array              | dtype            | shape            | stages                              |
|--------------------|------------------|------------------|-------------------------------------|
| `tokens.bin`       | uint16 or uint32 | (num_tokens,)    | all                                 |
| `doc_offsets.bin`  | uint64           | (num_docs + 1,)  | pre_training, sft                   |
| `loss_mask.bin`    | uint8            | (num_tokens,)    | sft                                 |
| `pair_offsets.bin` | uint64           | (num_pairs, 4)   | dpo                                 |
| `source_rows.bin`  | uint64           | (num_docs,)      | all, optional (raw row of each doc) |

- Document i is `tokens[doc_offsets[i]:doc_offsets[i + 1]]` and begins with `<|endoftext|>`.
- `loss_mask[j] == 1` means token j is a training target (it is predicted from tokens[:j]).
- A DPO pair row is `[prompt_start, chosen_start, rejected_start, end]`: the prompt is
  `tokens[p:c]` (ending with `<|assistant|>`), the chosen reply `tokens[c:r]`, the rejected reply
  `tokens[r:e]`; a reply ends with `<|end|>` unless tokenize_dataset cut it to fit
  `--max-length` (counted in meta.json's stats).
- Token arrays are uint16 while the vocabulary fits in 65,536 ids, else uint32.

`meta.json`: format_version, stage (the training stage the data is for: pre_training, sft or
dpo), dtype, vocab_size, tokenizer_sha256, num_tokens, num_documents, arrays ({name: {dtype,
shape, bytes}}) and stats (stage-specific counters).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.errors import UserError

FORMAT_VERSION = 2
STAGES = ("pre_training", "sft", "dpo")
SPLITS = ("train", "validation", "test")
ARRAYS_BY_STAGE = {
    "pre_training": ("tokens.bin", "doc_offsets.bin"),
    "sft": ("tokens.bin", "doc_offsets.bin", "loss_mask.bin"),
    "dpo": ("tokens.bin", "pair_offsets.bin"),
}
SOURCE_ROWS = "source_rows.bin"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def _layout(name: str, tokens: np.dtype) -> tuple[np.dtype, int]:
    """(element dtype, elements per row) of a named array."""
    layouts = {
        "tokens.bin": (tokens, 1),
        "loss_mask.bin": (np.dtype(np.uint8), 1),
        "pair_offsets.bin": (np.dtype(np.uint64), 4),
    }
    return layouts.get(name, (np.dtype(np.uint64), 1))


def write_array(file, values, dtype) -> None:
    """Append `values` as `dtype` to an open binary file. (Plain `file.write`, not numpy's
    `tofile`: on a full disk it raises OSError(ENOSPC), which `common.disk_space` reports.)"""
    file.write(np.ascontiguousarray(values, dtype).data)


class SplitWriter:
    """Streams one split to disk (memory stays flat), inside `common.atomic.atomic_directory` so
    an interrupted write never looks finished; with source_rows, also source_rows.bin."""

    def __init__(self, directory, stage: str, vocab_size: int, source_rows: bool = False):
        self.directory, self.stage, self.vocab_size = Path(directory), stage, vocab_size
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        names = ARRAYS_BY_STAGE[stage] + ((SOURCE_ROWS,) if source_rows else ())
        # kept open while the split streams in; closed by finish()
        self.files = {name: open(self.directory / name, "wb") for name in names}  # noqa: SIM115
        self.num_tokens = self.num_documents = 0
        if "doc_offsets.bin" in self.files:
            write_array(self.files["doc_offsets.bin"], [0], np.uint64)

    def _append(self, tokens: list, source_rows) -> None:
        flat = np.concatenate([np.asarray(part) for part in tokens])
        write_array(self.files["tokens.bin"], flat, self.dtype)
        if SOURCE_ROWS in self.files:
            write_array(self.files[SOURCE_ROWS], source_rows, np.uint64)

    def add_documents(self, documents: list, masks: list | None = None, source_rows=()) -> None:
        """Append a batch of documents (and, for SFT, their loss masks) in order."""
        if not len(documents):
            return
        ends = self.num_tokens + np.cumsum([len(doc) for doc in documents])
        self._append(documents, source_rows)
        write_array(self.files["doc_offsets.bin"], ends, np.uint64)
        if self.stage == "sft":
            write_array(self.files["loss_mask.bin"], np.concatenate(masks), np.uint8)
        self.num_tokens, self.num_documents = int(ends[-1]), self.num_documents + len(documents)

    def add_pairs(self, pairs: list, source_rows=()) -> None:
        """Append DPO (prompt, chosen, rejected) token lists in order."""
        if not len(pairs):
            return
        lengths = np.array([[len(part) for part in pair] for pair in pairs], np.int64)  # (pairs, 3)
        ends = self.num_tokens + np.cumsum(lengths.reshape(-1))
        starts = np.concatenate([[self.num_tokens], ends[:-1]]).reshape(-1, 3)
        rows = np.column_stack([starts, ends.reshape(-1, 3)[:, 2]])  # (pairs, 4): p, c, r, end
        self._append([part for pair in pairs for part in pair], source_rows)
        write_array(self.files["pair_offsets.bin"], rows, np.uint64)
        self.num_tokens, self.num_documents = int(ends[-1]), self.num_documents + len(pairs)

    def add_rows(self, rows: list) -> None:
        """Append encoded rows, each (raw row, parts): parts are (tokens,) for pre_training,
        (tokens, loss mask) for sft, (prompt, chosen, rejected) for dpo."""
        source_rows = [row for row, _ in rows]
        parts = [parts for _, parts in rows]
        if self.stage == "dpo":
            self.add_pairs(parts, source_rows)
            return
        masks = [mask for _, mask in parts] if self.stage == "sft" else None
        self.add_documents([part[0] for part in parts], masks, source_rows)

    def finish(self, tokenizer_sha256: str, stats: dict | None = None) -> dict:
        """Close the arrays and write `meta.json` describing them."""
        arrays = {}
        for name, file in self.files.items():
            file.close()
            dtype, row = _layout(name, self.dtype)
            size = (self.directory / name).stat().st_size
            shape = [size // (dtype.itemsize * row)] + ([row] if row > 1 else [])
            arrays[name] = {"dtype": dtype.name, "shape": shape, "bytes": size}
        meta = {
            "format_version": FORMAT_VERSION,
            "stage": self.stage,
            "dtype": self.dtype.name,
            "vocab_size": self.vocab_size,
            "tokenizer_sha256": tokenizer_sha256,
            "num_tokens": self.num_tokens,
            "num_documents": self.num_documents,
            "arrays": arrays,
            "stats": stats or {},
        }
        atomic_write_text(self.directory / "meta.json", json.dumps(meta, indent=2) + "\n")
        return meta


@dataclass
class TokenizedSplit:
    """One split opened read-only: arrays are memory-mapped, nothing is loaded up front."""

    directory: Path
    meta: dict
    tokens: np.ndarray
    doc_offsets: np.ndarray | None = None
    loss_mask: np.ndarray | None = None
    pair_offsets: np.ndarray | None = None
    source_rows: np.ndarray | None = None  # the raw row of each document, when written

    @property
    def stage(self) -> str:
        return self.meta["stage"]

    def document(self, index: int) -> np.ndarray:
        return self.tokens[int(self.doc_offsets[index]) : int(self.doc_offsets[index + 1])]

    def check_token_ids(self, vocab_size: int, chunk: int = 1 << 24) -> None:
        """UserError if any token id is >= vocab_size (scanned in chunks to keep memory flat)."""
        for start in range(0, len(self.tokens), chunk):
            largest = int(self.tokens[start : start + chunk].max())
            if largest >= vocab_size:
                raise UserError(
                    f"{self.directory}: token id {largest} is outside the vocabulary of size "
                    f"{vocab_size}; re-tokenize with the tokenizer this run uses"
                )


def open_split(directory: str | Path, stage: str | None = None) -> TokenizedSplit:
    """Open and validate one split folder (holding `stage` data, if given); UserError names
    what is wrong."""
    directory = Path(directory)
    meta = read_meta(directory, stage)
    dtype = _check_dtype(meta, directory / "meta.json")
    names = ARRAYS_BY_STAGE[meta["stage"]]
    names += (SOURCE_ROWS,) if SOURCE_ROWS in meta["arrays"] else ()
    arrays = {name: _open_array(directory / name, *_layout(name, dtype), meta) for name in names}
    tokens = arrays["tokens.bin"]
    for name in ("doc_offsets.bin", "pair_offsets.bin"):
        if name in arrays:
            _check_offsets(directory / name, arrays[name], len(tokens))
    if "loss_mask.bin" in arrays and len(arrays["loss_mask.bin"]) != len(tokens):
        raise UserError(f"{directory}: loss_mask.bin and tokens.bin differ in length; re-tokenize")
    if SOURCE_ROWS in arrays and len(arrays[SOURCE_ROWS]) != meta.get("num_documents"):
        raise UserError(f"{directory}: {SOURCE_ROWS} holds a row per document; re-tokenize")
    optional = ("doc_offsets.bin", "loss_mask.bin", "pair_offsets.bin", SOURCE_ROWS)
    return TokenizedSplit(directory, meta, tokens, *(arrays.get(name) for name in optional))


def read_meta(directory: str | Path, stage: str | None = None) -> dict:
    """The split's meta.json, checked for the keys and format version this code reads, and for
    holding `stage` data if a stage is given."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise UserError(
            f"{meta_path} is missing; make it with python3 -m tokenizer.tokenize_dataset"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{meta_path} is not valid JSON ({error})") from None
    for key in ("format_version", "stage", "dtype", "vocab_size", "arrays"):
        if key not in meta:
            raise UserError(f"{meta_path} lacks {key!r}; re-tokenize this dataset")
    if meta["format_version"] != FORMAT_VERSION:
        version = meta["format_version"]
        raise UserError(
            f"{meta_path} has format version {version}, not {FORMAT_VERSION}; re-tokenize"
        )
    if meta["stage"] not in STAGES:
        raise UserError(f"{meta_path}: unknown stage {meta['stage']!r}; re-tokenize this dataset")
    if stage is not None and meta["stage"] != stage:
        raise UserError(
            f"{directory} holds {meta['stage']} data but this step needs {stage} data; make it "
            f"with `python3 -m tokenizer.tokenize_dataset --stage {stage}`"
        )
    return meta


def _open_array(path: Path, dtype: np.dtype, row: int, meta: dict) -> np.ndarray:
    """Memory-map one array after checking its size against its dtype and meta.json."""
    if not path.is_file():
        raise UserError(f"{path} is missing; re-tokenize this dataset")
    size = path.stat().st_size
    if size % (dtype.itemsize * row):
        item = f"{dtype.itemsize * row} ({dtype.name})"
        raise UserError(f"{path} holds {size} bytes, not a multiple of {item}; re-tokenize")
    expected = meta["arrays"].get(path.name, {}).get("bytes")
    if expected != size:
        raise UserError(f"{path} holds {size} bytes, meta.json says {expected}; re-tokenize")
    count = size // dtype.itemsize
    if count == 0:
        return np.zeros((0, row) if row > 1 else 0, dtype)
    shape = (count // row, row) if row > 1 else (count,)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def _check_dtype(meta: dict, meta_path: Path) -> np.dtype:
    """The token dtype meta.json names, accepted only if it is the one SplitWriter writes for
    its vocab_size (uint16 up to 65,536 ids, else uint32): anything else reads garbage ids."""
    vocab_size = meta["vocab_size"]
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise UserError(f"{meta_path}: vocab_size {vocab_size!r} is not a positive integer")
    expected = token_dtype(vocab_size)
    if meta["dtype"] != expected.name:
        raise UserError(
            f"{meta_path}: dtype {meta['dtype']!r} is not what tokenize_dataset writes for a "
            f"vocabulary of {vocab_size:,} ({expected.name}); re-tokenize this dataset"
        )
    return expected


def _check_offsets(path: Path, offsets: np.ndarray, num_tokens: int) -> None:
    """Offsets must rise from 0 to the token count without gaps (a DPO pair starts where the
    previous one ended); anything else means a damaged or foreign folder."""
    if len(offsets) == 0:
        return
    flat = np.asarray(offsets, np.int64).reshape(-1)
    contiguous = offsets.ndim == 1 or bool(np.all(offsets[1:, 0] == offsets[:-1, -1]))
    if flat[0] != 0 or flat[-1] != num_tokens or np.any(np.diff(flat) < 0) or not contiguous:
        raise UserError(f"{path} does not delimit tokens.bin from 0 to {num_tokens}; re-tokenize")


def open_dataset(directory: str | Path, stage: str | None = None) -> dict[str, TokenizedSplit]:
    """Open every split folder present under `directory` (at least `train`), each holding
    `stage` data if a stage is given."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"tokenized dataset folder {directory} not found; run tokenize_dataset")
    splits = {
        name: open_split(directory / name, stage) for name in SPLITS if (directory / name).is_dir()
    }
    if "train" not in splits:
        raise UserError(f"{directory} has no train/ split; is it a tokenized dataset folder?")
    return splits
