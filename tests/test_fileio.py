"""Atomic writes: the old file survives a failed write; modes are as asked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provisioner import fileio


def test_new_file_gets_0644_and_existing_mode_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "a" / "f.txt"
    fileio.write_atomic(p, "one\n")
    assert p.read_text() == "one\n" and stat.S_IMODE(p.stat().st_mode) == 0o644
    p.chmod(0o640)
    fileio.write_atomic(p, "two\n")
    assert p.read_text() == "two\n" and stat.S_IMODE(p.stat().st_mode) == 0o640
    fileio.write_atomic(p, "secret\n", mode=0o600)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_failed_replace_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "f.txt"
    p.write_text("old\n")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", boom)
    with pytest.raises(OSError):
        fileio.write_atomic(p, "new\n")
    assert p.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["f.txt"]
