"""A full disk, said in one line: "no space left on the disk at <path>", not a library's traceback.

    with report_full_disk(output):   # around the writes, inside the atomic/temporary-file block
        write_everything()

Libraries say "disk full" in different ways: Python's own writes raise OSError(ENOSPC) (or
EDQUOT over a quota), Rust and Arrow code put "No space left on device" in the message, and
some only report the short write: numpy's `tofile` raises "N requested and M written", and
`torch.save` "[enforce fail at inline_container.cc:...] unexpected pos". Those last two are
taken as a full disk when the disk at `path` has almost no space left right after the error,
which is why the block goes INSIDE the code that deletes the partial output (the space is still
used up there).
"""

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_TEXTS = ("no space left on device", "disk quota exceeded", "storagefull")
LOW_SPACE_BYTES = 64 << 20  # a short write with less than this free is a full disk


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes a non-root user may still write on the filesystem of `path` (or of its nearest
    existing parent folder); None if it cannot be told."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException, path: str | os.PathLike) -> bool:
    """Whether `error` (or an error it came from) means the disk holding `path` is full."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in FULL_ERRNOS:
            return True
        if any(text in str(link).lower() for text in FULL_TEXTS):
            return True
    if isinstance(error, (OSError, RuntimeError)):  # a short write that gave no reason
        free = free_bytes(path)
        return free is not None and free < LOW_SPACE_BYTES
    return False


@contextlib.contextmanager
def report_full_disk(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full-disk error raised in the body into a one-line UserError naming `path`."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # Rust and C++ libraries raise their own exception types
        if not is_disk_full(error, path):
            raise
        free = free_bytes(path)
        left = f", {free / 2**20:.1f} MiB free" if free is not None else ""
        raise UserError(
            f"no space left on the disk at {path} ({type(error).__name__}{left}); free some "
            "space or write somewhere else, then run again"
        ) from None
