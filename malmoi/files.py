"""Atomic file writes and temporaries.

Every file malmoi writes goes to a temporary name in the destination folder first (a name with
``.malmoi-tmp`` in it, :data:`TMP_MARK`) and is renamed into place, so a crash never leaves a
half-written file under a final name; what a killed run leaves behind is recognised by that
mark and removed when the stage next starts (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".malmoi-tmp"  # in the name of every temporary file and folder malmoi makes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(dest: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    The temporary name keeps ``dest``'s suffix (or ``suffix``) so tools that guess the format
    from the file name (ffmpeg, soundfile) still work.
    """
    tmp_path = temp_file(dest, suffix)
    try:
        yield tmp_path
        sync(tmp_path)  # the data is on disk before a progress row vouches for it
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def temp_file(dest: Path, suffix: str | None = None) -> Path:
    """A new empty temporary file beside ``dest``, named ``.<name>.<random>.malmoi-tmp<ext>``
    (keeping the ending so tools that guess the format from it still work), readable as a
    dataset file should be."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=TMP_MARK + (suffix or dest.suffix), dir=dest.parent
    )
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes it private; a dataset is for sharing
    return Path(tmp)


def temp_dir(parent: Path) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder inside ``parent`` (removed on exit; a killed run's is removed when
    the stage next starts)."""
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=parent, prefix=TMP_MARK + "-")


def sync(path: Path) -> None:
    """fsync a file or folder (so a rename that follows never exposes an empty file after a
    crash, and a rename in a folder survives one)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    """A temporary file or folder of malmoi's: this version's mark, or the names earlier
    versions used (``.<name>.<random>.tmp<ext>`` files, ``.tmp-<random>`` folders)."""
    return TMP_MARK in name or bool(_LEGACY_TMP.match(name))


_LEGACY_TMP = re.compile(r"^\.(tmp-[A-Za-z0-9_]{8}|.+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?)$")


def remove_stale_temporaries(folder: Path, marker: str | None = None) -> tuple[int, int]:
    """Remove the temporary files and folders a killed run left anywhere under ``folder``;
    return how many and their bytes. Only call it while holding the folder's lock. A
    sub-folder holding a file named ``marker`` (another stage's folder, with its own lock, as
    ``OUT/ingest`` inside ``malmoi separate``'s ``OUT``) is left to its own stage."""
    count = size = 0
    for root, dirs, files in os.walk(folder):
        if marker is not None:
            dirs[:] = [d for d in dirs if not (Path(root) / d / marker).exists()]
        for name in [d for d in dirs if is_temporary(d)]:
            path = Path(root) / name
            size += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
            dirs.remove(name)
            count += 1
        for name in files:
            if is_temporary(name):
                path = Path(root) / name
                with contextlib.suppress(OSError):
                    size += path.stat().st_size
                    path.unlink()
                    count += 1
    return count, size


def atomic_write_text(dest: Path, text: str) -> None:
    """Write ``text`` to ``dest`` atomically (UTF-8)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def link_file(src: Path, dest: Path) -> None:
    """``dest`` as a hard link to ``src`` (a copy across file systems)."""
    if dest.exists():
        if os.path.samefile(src, dest):
            return
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
