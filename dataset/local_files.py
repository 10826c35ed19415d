"""Reading the user's own files for `--source local`: text, JSON lines and Parquet.

By file extension: `.txt`, `.text`, `.md`: UTF-8 text, one document per blank-line-separated
block (`--txt-documents blank_line`, the default) or per file (`file`); `.jsonl`, `.json`: one
JSON object per line; `.parquet`: a Parquet table. Everything is read in pieces (memory stays
flat); rows that cannot be used are counted by the caller, an unreadable file is a UserError.
"""

import glob
import json
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError

KINDS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl"}
KINDS[".parquet"] = "parquet"


def resolve_data_files(patterns: list[str] | None, kinds: tuple[str, ...]) -> list[Path]:
    """Expand --data-files patterns into existing, non-empty files of one allowed kind."""
    if not patterns:
        raise UserError("--source local needs --data-files FILE [FILE ...]")
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise UserError(f"--data-files: {pattern} does not exist (no file matches it)")
        for match in map(Path, matches):
            if not match.is_file():
                raise UserError(f"--data-files: {match} is not a file")
            if match.stat().st_size == 0:
                raise UserError(f"--data-files: {match} is empty")
            if KINDS.get(match.suffix.lower()) not in kinds:
                suffixes = ", ".join(sorted(s for s, kind in KINDS.items() if kind in kinds))
                raise UserError(
                    f"--data-files: {match} has an unsupported extension (use {suffixes})"
                )
            files.append(match)
    found = {file_kind(file) for file in files}
    if len(found) > 1:
        raise UserError(f"--data-files mixes file kinds ({', '.join(sorted(found))})")
    return files


def file_kind(path: Path) -> str:
    return KINDS[path.suffix.lower()]


def utf8_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file; a line that is not UTF-8 is a UserError naming it and the
    command that converts the file. (Undecodable bytes become lone surrogates on reading, which
    re-encoding finds.)"""
    with open(path, encoding="utf-8", errors="surrogateescape") as file:
        for number, line in enumerate(file, start=1):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
                raise UserError(
                    f"{path} is not UTF-8 text (line {number}); convert it and pass the converted "
                    f"file, e.g. `iconv -f latin1 -t utf-8 {path} > {converted}` (for Latin-1)"
                ) from None
            yield line


def text_documents(path: Path, per_file: bool) -> Iterator[str]:
    """The documents of a text file: the whole file, or each blank-line-separated block."""
    if per_file:
        yield "".join(utf8_lines(path))
        return
    block: list[str] = []
    for line in utf8_lines(path):
        if line.strip():
            block.append(line)
        elif block:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


def jsonl_rows(path: Path) -> Iterator[object]:
    """The parsed value of each non-blank line; None for a line that is not JSON."""
    for line in utf8_lines(path):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield None


def parquet_rows(path: Path, columns: list[str]) -> Iterator[dict]:
    """The rows of a Parquet file as dicts (only `columns` that exist), in record batches."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:
        raise UserError(f"{path} is not a readable Parquet file ({error})") from None
    present = [column for column in columns if column in parquet.schema_arrow.names]
    for batch in parquet.iter_batches(batch_size=10_000, columns=present):
        yield from batch.to_pylist() if present else ({} for _ in range(batch.num_rows))
