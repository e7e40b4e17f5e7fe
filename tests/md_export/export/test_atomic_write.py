"""The write-then-rename helpers every output goes through (md_export.export.manifest)."""

import os
import stat
from pathlib import Path

import pytest

from md_export.export.manifest import replace_path, write_bytes_atomic, write_file_atomic


def test_write_file_atomic_renames_a_finished_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.bin"
    write_file_atomic(path, lambda tmp: Path(tmp).write_bytes(b"new"))
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail(tmp):
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_file_atomic(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_mode_none_keeps_the_temp_files_mode(tmp_path):
    write_bytes_atomic(tmp_path / "private", b"x", mode=None)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_replace_path_replaces_a_directory_and_a_file(tmp_path):
    new_dir, old_dir = tmp_path / ".staging" / "pkg", tmp_path / "out" / "pkg"
    new_dir.mkdir(parents=True)
    (new_dir / "a").write_text("new")
    old_dir.mkdir(parents=True)
    (old_dir / "stale").write_text("old")
    replace_path(new_dir, old_dir)
    assert sorted(p.name for p in old_dir.iterdir()) == ["a"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pkg"]  # nothing set aside is left

    new_file = tmp_path / ".staging" / "f"
    new_file.write_text("new")
    (tmp_path / "out" / "f").write_text("old")
    replace_path(new_file, tmp_path / "out" / "f")
    assert (tmp_path / "out" / "f").read_text() == "new"

    (tmp_path / ".staging" / "g").write_text("g")
    replace_path(tmp_path / ".staging" / "g", tmp_path / "out" / "sub" / "g")  # creates the parent
    assert (tmp_path / "out" / "sub" / "g").read_text() == "g"


def test_replace_path_puts_the_old_directory_back_when_the_rename_fails(tmp_path, monkeypatch):
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    new_dir.mkdir()
    old_dir.mkdir()
    (old_dir / "keep").write_text("keep")
    real_replace = os.replace

    def replace(src, dst):
        if str(src) == str(new_dir):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        replace_path(new_dir, old_dir)
    assert (old_dir / "keep").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]
