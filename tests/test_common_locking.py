"""common.locking, common.disk_space and locked_output_directory: two runs on one folder, killed
runs' leftovers and a full disk each end in one line, and never cost a finished output."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common import disk_space
from common.atomic import locked_output_directory, remove_leftovers
from common.disk_space import report_full_disk
from common.errors import UserError
from common.locking import folder_lock, lock_path

REPO = Path(__file__).resolve().parent.parent

TAKE_LOCK = """
import sys, time
from common.errors import run_cli
from common.locking import folder_lock

def main():
    with folder_lock(sys.argv[1], what="test output"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))

run_cli(main)
"""


def take_lock(folder: Path, seconds: float) -> subprocess.Popen:
    """A process that holds `folder`'s lock for `seconds` (it prints "locked" once it does)."""
    process = subprocess.Popen(
        [sys.executable, "-c", TAKE_LOCK, str(folder), str(seconds)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process


def test_second_process_gets_one_line_naming_the_holder(tmp_path):
    folder = tmp_path / "out"  # does not exist: the lock must work before it does
    with folder_lock(folder, what="test output"):
        other = take_lock(folder, 0)
        stdout, stderr = other.communicate(timeout=60)
    assert other.returncode == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert f"process {os.getpid()}" in stderr and "test output" in stderr
    assert not folder.exists() and lock_path(folder).parent == tmp_path


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    folder = tmp_path / "out"
    holder = take_lock(folder, 600)
    assert holder.stdout.readline() == "locked\n"
    with pytest.raises(UserError, match=f"process {holder.pid} holds"), folder_lock(folder):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    with folder_lock(folder):  # a crash leaves no stale lock behind
        pass


def test_lock_survives_overwrite_replacing_the_folder(tmp_path):
    final = tmp_path / "out"
    for text in ("first", "second"):
        with locked_output_directory(final, overwrite=True, what="test output") as temp:
            (temp / "a.txt").write_text(text)
            with pytest.raises(UserError, match="in use"), folder_lock(final):
                pass
    assert (final / "a.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the lock file goes on release


def test_leftovers_of_killed_runs_are_removed_and_nothing_else(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    for name in ("out.tmp-999999", "out.old-17", "out.tmp-abc", "other.tmp-5", "out.tmp-1.x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokens.bin").write_bytes(b"\0" * 10)
    mine = tmp_path / f"out.tmp-{os.getpid()}"
    mine.mkdir()
    removed = remove_leftovers(final)
    assert sorted(p.name for p in removed) == ["out.old-17", "out.tmp-999999"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["other.tmp-5", "out", "out.tmp-1.x", "out.tmp-abc", mine.name])


def test_output_moved_aside_by_a_killed_swap_comes_back(tmp_path):
    final = tmp_path / "out"
    (tmp_path / "out.old-999999").mkdir()
    (tmp_path / "out.old-999999" / "meta.json").write_text("{}")
    (tmp_path / "out.tmp-999998").mkdir()
    assert [p.name for p in remove_leftovers(final)] == ["out.tmp-999998"]
    assert (final / "meta.json").read_text() == "{}"


def test_locked_output_directory_removes_leftovers_before_writing(tmp_path, capsys):
    final = tmp_path / "out"
    leftover = tmp_path / "out.tmp-999999"
    leftover.mkdir()
    with locked_output_directory(final, overwrite=False, what="test output") as temp:
        (temp / "a.txt").write_text("a")
    assert not leftover.exists() and (final / "a.txt").read_text() == "a"
    assert "out.tmp-999999, left behind by an interrupted run" in capsys.readouterr().out


def enospc_write(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_keeps_the_previous_output_and_says_so_in_one_line(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "a.txt").write_text("finished")
    with (
        pytest.raises(UserError, match=f"no space left on the disk at {final}") as error,
        locked_output_directory(final, overwrite=True, what="test output") as temp,
    ):
        (temp / "part.bin").write_bytes(b"partial")
        enospc_write()
    assert "\n" not in str(error.value)
    assert (final / "a.txt").read_text() == "finished"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the lock file goes on release


def test_short_writes_count_as_full_only_when_the_disk_is_nearly_full(tmp_path, monkeypatch):
    # What numpy's tofile and torch.save raise on a full disk: a short write, no errno.
    numpy_message = "100000 requested and 0 written"
    torch_message = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
    with pytest.raises(OSError, match="requested and"), report_full_disk(tmp_path):
        raise OSError(numpy_message)  # plenty of space at tmp_path: the error is kept
    monkeypatch.setattr(disk_space, "free_bytes", lambda path: 1000)
    with pytest.raises(UserError, match="no space left"), report_full_disk(tmp_path):
        raise OSError(numpy_message)
    with pytest.raises(UserError, match="RuntimeError"), report_full_disk(tmp_path):
        raise RuntimeError(torch_message)


def test_full_disk_found_through_chained_and_foreign_errors(tmp_path):
    class SafetensorError(Exception):  # Rust libraries raise their own types
        pass

    with pytest.raises(UserError, match="no space"), report_full_disk(tmp_path):
        raise SafetensorError("IoError(Os { code: 28, kind: StorageFull })")
    with pytest.raises(UserError, match="no space"), report_full_disk(tmp_path):
        try:
            enospc_write()
        except OSError as error:
            raise ValueError("generation failed") from error
    with pytest.raises(ValueError, match="unrelated"), report_full_disk(tmp_path):
        raise ValueError("unrelated")


def test_full_disk_detection_on_a_path_that_does_not_exist_yet(tmp_path):
    assert disk_space.free_bytes(tmp_path / "a" / "b") == disk_space.free_bytes(tmp_path)
    assert disk_space.is_disk_full(OSError(errno.EDQUOT, "quota"), tmp_path / "x")
    assert not disk_space.is_disk_full(OSError(errno.EACCES, "denied"), tmp_path / "x")


def test_lock_file_left_by_a_killed_holder_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    holder = take_lock(folder, 600)
    assert holder.stdout.readline() == "locked\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert lock_path(folder).read_text() == f"{holder.pid}\n"  # stale, and harmless:
    with folder_lock(folder) as path:
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()
