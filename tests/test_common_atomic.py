"""Atomic outputs: an interrupted write must never leave something that looks finished."""

import pytest

from common.atomic import atomic_directory, atomic_write_text, sha256_file
from common.errors import UserError


def test_directory_appears_only_on_success(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final) as temp:
        (temp / "a.txt").write_text("a")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_interrupted_directory_leaves_nothing(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), atomic_directory(final) as temp:
        (temp / "a.txt").write_text("a")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(UserError, match="--overwrite"), atomic_directory(final):
        pass
    with atomic_directory(final, overwrite=True) as temp:
        (temp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_atomic_write_text_and_sha256(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "hello")
    assert path.read_text() == "hello"
    assert sha256_file(path) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
