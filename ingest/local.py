"""Local engine: turn files and folders on disk into ingest items (raw files are only read)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from malmoi.ids import root_id
from malmoi.logs import get_logger
from malmoi.stage import Item

log = get_logger(__name__)


def file_item(path: Path) -> Item:
    """The item for one media file: id from its name and its absolute path as it is on disk
    (not normalised), fingerprint from its size and modification time (so an edited or
    replaced file is ingested again, and an unchanged one is not even probed)."""
    abs_path = Path(path).expanduser().absolute()  # as on disk: Linux does not normalise
    try:
        st = abs_path.stat()
        fingerprint = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        fingerprint = "missing"
    source = str(abs_path)
    return Item(
        id=root_id(abs_path.stem, source), path=abs_path, source=source, fingerprint=fingerprint
    )


def discover(
    paths: Iterable[Path], extensions: Iterable[str], recursive: bool = True
) -> Iterator[Item]:
    """Items for ``paths``: a file is taken whatever its ending (so a bad one is reported, not
    ignored); a folder contributes its files with one of ``extensions``, in sorted order."""
    exts = {e.lower().lstrip(".") for e in extensions}
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            walker = sorted(_walk(path) if recursive else path.iterdir())
            for child in walker:
                if (
                    child.is_file()
                    and not child.name.startswith(".")
                    and child.suffix.lower().lstrip(".") in exts
                ):
                    yield file_item(child)
        else:
            yield file_item(path)


def _walk(folder: Path) -> Iterator[Path]:
    """The files under ``folder``, leaving out hidden folders and stage folders (what a stage
    wrote is read from its manifest, given as an input itself: never its decoded copies)."""
    from malmoi.folders import is_stage_folder

    for root, dirs, files in os.walk(folder):
        kept = []
        for d in dirs:
            if d.startswith("."):
                continue
            if is_stage_folder(Path(root) / d):
                log.warning(
                    "%s: a stage folder, left out (give it as an input itself)", Path(root) / d
                )
                continue
            kept.append(d)
        dirs[:] = kept
        for name in files:
            yield Path(root) / name
