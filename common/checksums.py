"""Checksums of a folder's files, so a damaged file is found before it is used.

A checkpoint folder carries a `SHA256SUMS` file in the format `sha256sum` writes, so a user can
also check one by hand: `cd checkpoints/<run>/step_0000100 && sha256sum -c SHA256SUMS`.
Bit rot, a bad copy or bytes written into the middle of a file keep its size and often its
format, and loading such a file "works": only a checksum tells.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from common.atomic import atomic_write_text, sha256_file
from common.errors import UserError

SUMS_FILE = "SHA256SUMS"


class ChecksumMismatch(UserError):
    """A file differs from the checksum recorded for it (or the record is unreadable)."""


def write_checksums(folder: Path) -> None:
    """Record the sha256 of every file in `folder` (not in sub-folders) in folder/SHA256SUMS."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != SUMS_FILE)
    atomic_write_text(folder / SUMS_FILE, "".join(f"{sha256_file(p)}  {p.name}\n" for p in files))


def read_checksums(folder: Path) -> dict[str, str] | None:
    """{file name: sha256} from folder/SHA256SUMS; None when the folder has none (older ones)."""
    path = folder / SUMS_FILE
    if not path.is_file():
        return None
    sums = {}
    try:
        for line in path.read_text().splitlines():
            digest, name = line.split("  ", 1)
            if len(digest) != 64 or not name:
                raise ValueError(line)
            sums[name] = digest
    except (OSError, UnicodeDecodeError, ValueError):
        raise ChecksumMismatch(f"{path} is unreadable; the checkpoint is damaged") from None
    return sums


def verify_checksums(folder: Path, names: Iterable[str] | None = None) -> None:
    """Raise ChecksumMismatch naming the first file of `names` (default: all recorded) whose
    sha256 differs from folder/SHA256SUMS. A folder without SHA256SUMS is not checked."""
    sums = read_checksums(folder)
    if sums is None:
        return
    for name in sums if names is None else names:
        path = folder / name
        if name in sums and path.is_file() and sha256_file(path) != sums[name]:
            raise ChecksumMismatch(
                f"{path} does not match its checksum in {folder / SUMS_FILE}: the file is "
                "damaged (a bad copy, a disk error, or it was edited); use another checkpoint"
            )
