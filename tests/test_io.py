"""diffembed.io: atomic writes end with the modes the umask gives ordinary files and folders
(not mkstemp's 0600 / mkdtemp's 0700), without ever changing the process umask (other threads
would create world-writable files meanwhile), and clean up after a failure."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from diffembed import io as dio


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_write_and_dir_end_with_the_umask_modes(tmp_path, umask):
    dio.write_json(tmp_path / "a.json", {"x": 1})
    with dio.atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\0")
    with dio.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "inner.txt").write_text("y")
    plain = tmp_path / "plain.txt"
    plain.write_text("z")  # what open() gives, for comparison
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.bin") == 0o666 & ~umask
    assert _mode(plain) == 0o666 & ~umask
    assert _mode(tmp_path / "d") == 0o777 & ~umask
    assert _mode(tmp_path / "d" / "inner.txt") == 0o666 & ~umask
    # Replacing keeps the umask mode too (the old directory is moved aside, then removed).
    with dio.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "new.txt").write_text("n")
    assert _mode(tmp_path / "d") == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "d", "plain.txt"]


def test_atomic_writes_never_change_the_process_umask(tmp_path, monkeypatch):
    """Reading the umask by setting it (``os.umask(0)`` then back) opens a window in which
    every other thread creates world-writable files, and two racing readers can leave the
    process at umask 0 for good."""
    old = os.umask(0o022)
    calls: list[int] = []
    real = os.umask

    def spy(mask: int) -> int:
        calls.append(mask)
        return real(mask)

    monkeypatch.setattr(os, "umask", spy)
    try:
        dio.write_json(tmp_path / "a.json", {})
        with dio.atomic_dir(tmp_path / "d"):
            pass
        assert [m for m in calls if m != 0o022] == []
        assert _mode(tmp_path / "a.json") == 0o644 and _mode(tmp_path / "d") == 0o755
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_concurrent_atomic_writes_keep_modes(tmp_path):
    old = os.umask(0o022)
    try:

        def work(t: int) -> None:
            for i in range(50):
                dio.write_json(tmp_path / f"{t}-{i}.json", {"i": i})

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {_mode(p) for p in tmp_path.iterdir()} == {0o644}
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)


def test_failed_atomic_writes_leave_nothing(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), dio.atomic_write(tmp_path / "keep.txt") as f:
        f.write("half")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), dio.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x")
        raise RuntimeError("boom")
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# Issue 26: an output that cannot be written is refused before any work, naming the user's path
# (never a temporary file). /proc takes no new file, even from root (which passes permission
# bits), so it stands for any unwritable folder.
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")


@needs_proc
def test_unwritable_outputs_are_named_not_their_temporary_files(tmp_path):
    with pytest.raises(PermissionError, match=r"^/proc/x\.npy: cannot create files in /proc .*"):
        dio.check_output_file("/proc/x.npy", "choose another --output")
    with pytest.raises(PermissionError, match=r"^/proc/new/d: .*choose another --out$"):
        dio.check_output_dir("/proc/new/d", False)
    with pytest.raises(PermissionError, match=r"^/proc/ix: cannot create files in /proc"):
        dio.check_writable("/proc/ix", into=True)
    # and the atomic writers themselves, for the Python API: the user's path, not .x.npy.*.tmp
    for write in (lambda: dio.atomic_write("/proc/x.npy"), lambda: dio.atomic_dir("/proc/d")):
        with pytest.raises(OSError) as caught, write():
            pass
        assert str(caught.value).startswith("/proc/") and ".tmp" not in str(caught.value)


def test_outputs_in_the_way_of_a_folder_or_file_are_named(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match=r"d: is a directory, not a file; choose another"):
        dio.check_output_file(tmp_path / "d")
    with pytest.raises(NotADirectoryError, match=r"f/out\.json: .*/f is a file, not a directory"):
        dio.check_output_file(tmp_path / "f" / "out.json")
    with pytest.raises(NotADirectoryError, match=r"f: exists and is not a directory"):
        dio.check_writable(tmp_path / "f", into=True)
    # writable places pass, new folders included, and leave nothing behind
    dio.check_output_file(tmp_path / "new" / "deeper" / "out.json")
    dio.check_output_dir(tmp_path / "d", False)
    dio.check_writable(tmp_path / "d", into=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]
    assert not any((tmp_path / "d").iterdir())
