"""Reading the user's own files for `--source local`: text, JSON lines and Parquet.

Formats, by file extension:
- `.txt`, `.text`, `.md`: plain UTF-8 text; one document per blank-line-separated block
  (`--txt-documents blank_line`, the default) or one document per file (`file`);
- `.jsonl`, `.json`: one JSON object per line;
- `.parquet`: a Parquet table.

Rows that cannot be used (a line that is not JSON, a missing or non-text field) are counted by
the caller and skipped, never silently dropped; an unreadable file is a UserError naming it.
"""

import glob
import json
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError

TEXT_SUFFIXES = {".txt", ".text", ".md"}
JSONL_SUFFIXES = {".jsonl", ".json"}
PARQUET_SUFFIXES = {".parquet"}


def resolve_data_files(patterns: list[str] | None, allowed: set[str]) -> list[Path]:
    """Expand --data-files patterns into existing, non-empty files of one allowed kind."""
    if not patterns:
        raise UserError("--source local needs --data-files FILE [FILE ...]")
    files: list[Path] = []
    for pattern in patterns:
        matches = (
            sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        )
        if not matches or not Path(matches[0]).exists():
            raise UserError(f"--data-files: {pattern} does not exist (no file matches it)")
        for match in map(Path, matches):
            if not match.is_file():
                raise UserError(f"--data-files: {match} is not a file")
            if match.stat().st_size == 0:
                raise UserError(f"--data-files: {match} is empty")
            if match.suffix.lower() not in allowed:
                raise UserError(
                    f"--data-files: {match} has an unsupported extension; "
                    f"use one of {', '.join(sorted(allowed))}"
                )
            files.append(match)
    kinds = {file_kind(file) for file in files}
    if len(kinds) > 1:
        raise UserError(
            f"--data-files mixes file kinds ({', '.join(sorted(kinds))}); pass one kind"
        )
    return files


def file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    return "jsonl" if suffix in JSONL_SUFFIXES else "parquet"


def not_utf8(path: Path, line_number: int) -> UserError:
    """The one-line error for a file that is not UTF-8, with the command that converts it."""
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    return UserError(
        f"{path} is not UTF-8 text (line {line_number}); convert it and pass the converted "
        f"file, e.g. `iconv -f latin1 -t utf-8 {path} > {converted}` (for Latin-1 text)"
    )


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, read line by line (bounded memory).

    Bytes that are not UTF-8 decode to lone surrogates here (`surrogateescape`), which
    re-encoding finds: that way the error can name the line."""
    with open(path, encoding="utf-8", errors="surrogateescape") as file:
        for line_number, line in enumerate(file, start=1):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                raise not_utf8(path, line_number) from None
            yield line_number, line


def read_text(path: Path) -> str:
    return "".join(line for _, line in utf8_lines(path))


def iter_text_documents(path: Path, per_file: bool) -> Iterator[str]:
    """The documents of a text file: the whole file, or each blank-line-separated block.

    Blocks are read line by line, so a huge file never has to fit in memory.
    """
    if per_file:
        yield read_text(path)
        return
    block: list[str] = []
    for _, line in utf8_lines(path):
        if line.strip():
            block.append(line)
        elif block:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


def iter_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) per non-blank line; a value of `None` marks invalid JSON."""
    for line_number, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            yield line_number, json.loads(line)
        except json.JSONDecodeError:
            yield line_number, None


def iter_parquet_rows(path: Path, columns: list[str] | None = None) -> Iterator[dict]:
    """The rows of a Parquet file as dicts, read in record batches (bounded memory)."""
    import pyarrow.parquet as pq  # a dependency of `datasets`

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:
        raise UserError(f"{path} is not a readable Parquet file ({error})") from error
    present = [column for column in (columns or []) if column in parquet.schema_arrow.names]
    for batch in parquet.iter_batches(batch_size=10_000, columns=present or None):
        yield from batch.to_pylist()
