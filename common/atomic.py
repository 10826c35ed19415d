"""Atomic outputs: a folder or file is either absent, or complete. Never half-written.

- `atomic_directory`: build a folder under a temporary name, rename it into place at the end;
- `locked_output_directory`: the same for a command's output folder, under the folder's lock
  (`common.locking`), after removing what killed runs left behind, with a full disk reported
  in one line (`common.disk_space`);
- `atomic_write_bytes` / `atomic_write_text`: the same for one file.
"""

import contextlib
import hashlib
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from common.disk_space import report_full_disk
from common.errors import UserError
from common.locking import folder_lock


@contextlib.contextmanager
def atomic_directory(final_path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final_path`; rename it into place only on success.

    On any exception (Ctrl-C included) the temporary folder is removed, so a finished-looking
    output only ever exists when the whole body ran.
    """
    final = Path(final_path)
    if final.exists() and not overwrite:
        raise UserError(f"{final} already exists; pass --overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    replace_directory(temp, final)


def replace_directory(temp: Path, final: Path) -> None:
    """Rename the finished folder `temp` to `final`. An old `final` is moved aside first and
    removed after, so `final` is never missing for long (`remove_leftovers` puts it back if a
    run is killed in between)."""
    if final.exists():
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(temp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temp, final)


def remove_leftovers(final_path: str | os.PathLike) -> list[Path]:
    """Remove the `<name>.tmp-<pid>` and `<name>.old-<pid>` folders that killed runs left beside
    `final_path`; returns what was removed. Call it only while holding the folder's lock.

    Under the lock no other run can be writing them, so each belongs to a process that is gone,
    however its pid is used now. An `.old-` folder is the previous output that a run killed in
    the middle of its swap had moved aside; it is put back when `final_path` is missing.
    """
    final = Path(final_path)
    removed = []
    pattern = re.compile(rf"{re.escape(final.name)}\.(tmp|old)-\d+")
    if not final.parent.is_dir():
        return removed
    for leftover in sorted(final.parent.iterdir()):
        if not pattern.fullmatch(leftover.name) or leftover.name.endswith(f"-{os.getpid()}"):
            continue
        if leftover.name.startswith(f"{final.name}.old-") and not final.exists():
            os.replace(leftover, final)  # nothing lost: the last finished output comes back
            continue
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover)
    return removed


@contextlib.contextmanager
def locked_output_directory(
    final_path: str | os.PathLike, overwrite: bool, what: str
) -> Iterator[Path]:
    """`atomic_directory` for a command's output folder, made safe against its other runs.

    Holds `final_path`'s lock (a second run gets a one-line error naming this one's pid),
    removes the leftovers of killed runs, and turns a full disk into a one-line UserError; the
    temporary folder is removed and an existing output stays untouched on any error.
    """
    final = Path(final_path)
    with folder_lock(final, what):
        for leftover in remove_leftovers(final):
            print(f"removed {leftover}, left behind by an interrupted run")
        with atomic_directory(final, overwrite) as temp, report_full_disk(final):
            yield temp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file, fsync it, then rename it over `path`."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def readable_as_umask_allows(path: str | os.PathLike) -> None:
    """Give a file the mode a plain `open()` would (0666 minus the umask).

    safetensors writes its files readable by their owner only (0600); an exported model or a
    checkpoint is meant to be copied and shared like any other file.
    """
    # Reading the umask means setting it (os.umask), briefly for the whole process: a file
    # another thread creates meanwhile would be world-writable. Ask a new file instead.
    probe = Path(path).with_name(f".mode-probe-{os.getpid()}-{threading.get_ident()}")
    probe.touch()  # created as open() creates files: 0666 minus the umask
    try:
        os.chmod(path, stat.S_IMODE(probe.stat().st_mode))
    finally:
        probe.unlink()
