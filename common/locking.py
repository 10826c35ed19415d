"""One process at a time per output folder: an exclusive OS file lock (`fcntl.flock`).

    with folder_lock("data/pre_training/tokenized", what="tokenize output"):
        ...  # only this process writes the folder (or the run folder, for training)

A second process asking for the same folder gets a one-line UserError naming the process id
that holds it. The kernel releases the lock whenever its holder exits, however it exits
(Ctrl-C, an exception, `kill -9`, a crash), so a stale lock cannot block the next run.

Where the lock lives: a hidden file `.<name>.lock` BESIDE the folder (`data/.tokenized.lock` for
`data/tokenized`), never inside it. So it can be taken before the folder exists, and it stays
the same lock while `--overwrite` replaces the folder (a lock inside the folder would be renamed
away with it). The file holds the holder's pid, for the error message. The holder deletes it
on release; one left by a killed process is harmless (nobody holds its lock: the next run
takes it). A process that locks a file just as its holder deletes it sees that the file is no
longer at the path and locks the new one, so two processes never both hold "the" lock.
"""

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of `folder`: `.<name>.lock` in its parent folder."""
    folder = Path(folder).absolute()
    return folder.with_name(f".{folder.name}.lock")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "output folder") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` for the body; UserError if another process holds it.

    `what` names the folder in the error ("tokenize output", "training run", ...).
    Creates the parent folder if needed; the folder itself need not exist.
    """
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_pid(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = f"process {holder}" if holder else "another process"
            raise UserError(
                f"{folder} is in use: {who} holds its lock ({path}) as {what}; wait for it "
                "to finish or stop it, then run again"
            ) from None
        if _is_file_at(fd, path):
            break
        os.close(fd)  # its holder removed that file as we locked it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # still locked here, so no other process holds this file
        os.close(fd)  # closing the descriptor releases the lock


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None
