"""Where a slice comes from: its lineage through the manifests of the stages before it.

A build's stages write ``<output_dir>/<stage>/manifest.csv``; every row names its parent
(``parent_id``). :class:`Lineage` reads those manifests once and answers, for a slice, the id of
the episode or input file it descends from (the ingest row at the root: the unit of the splits),
that source's URL or path, title, licence and original media file (for its subtitles), and any
measurement of the slice or of a row it descends from (:meth:`Lineage.value`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malmoi.manifest import MANIFEST, read_records


@dataclass(frozen=True)
class Origin:
    """The episode or input file a slice descends from."""

    source_id: str
    url: str  # the episode URL (crawled) or the original file's path
    title: str
    licence: str
    media: Path | None  # the original media file on disk (subtitles lie beside it)


class Lineage:
    """The manifests of the stage folders under ``root`` (a build's ``output_dir``): of every
    stage before export in :mod:`malmoi.registry`. :meth:`following` reads instead the folders
    a stage folder's inputs came from, recorded run by run (stage commands chained by hand)."""

    def __init__(self, root: Path | None, folders: list[tuple[str, Path]] | None = None):
        from malmoi.registry import before

        self.root = root
        self.rows: dict[str, dict[str, Any]] = {}  # id -> the earliest stage's row
        self.crawl: dict[str, dict[str, Any]] = {}
        self.crawl_dirs: dict[str, Path] = {}  # crawled id -> the crawl folder it lies in
        self.by_id: dict[str, list[dict[str, Any]]] = {}  # id -> its rows, latest stage first
        self.folders: list[tuple[str, Path]] = (
            folders
            if folders is not None
            else [(s.name, root / s.name) for s in before("export")]
            if root is not None
            else []
        )
        for stage, folder in self.folders:
            if stage == "export":
                continue
            for rec in read_records(folder / MANIFEST):
                if stage == "crawl":
                    self.crawl[rec["id"]] = rec
                    self.crawl_dirs[rec["id"]] = folder
                    continue
                self.rows.setdefault(rec["id"], rec)
                self.by_id.setdefault(rec["id"], []).insert(0, rec)

    @classmethod
    def following(cls, folder: Path) -> Lineage:
        """The lineage of the slices in stage folder ``folder``: the folders its inputs came
        from, as their ``stage.json`` records tell (:func:`malmoi.folders.chain`); for a folder
        written before records, its sibling stage folders (a build's layout)."""
        from malmoi.folders import chain, read_record

        folder = Path(folder).absolute()
        if not read_record(folder):
            return cls(folder.parent)
        return cls(None, chain(folder))

    def source_id(self, row: dict[str, Any]) -> str:
        """The root of ``row``'s lineage (an ingest id), following ``parent_id``."""
        current, seen = row, set()
        while current.get("parent_id") and current["parent_id"] not in seen:
            seen.add(current["parent_id"])
            parent = self.rows.get(current["parent_id"])
            if parent is None:
                return str(current["parent_id"])
            current = parent
        return str(current["id"])

    def value(self, row: dict[str, Any], column: str) -> Any:
        """The value of ``column`` for ``row``: its own, else that of the nearest row it
        descends from that has one (a denoised slice's ``similarity`` is the speaker filter's
        row of its parent, its ``start`` the segment's); None when no row has it. Rows keep
        their ancestors' measurements through this: no stage copies them forward."""
        found = self.row_with(row, column)
        return None if found is None else found[column]

    def row_with(self, row: dict[str, Any], column: str) -> dict[str, Any] | None:
        """The nearest row in ``row``'s lineage (itself, the later stages' rows of its id
        first, then its ancestors') with a value in ``column``; None when none has one. A
        stage's own column (the transcribe stage's ``asr_model``) finds that stage's row."""
        current: dict[str, Any] | None = row
        seen: set[str] = set()
        while current is not None and current["id"] not in seen:
            seen.add(current["id"])
            for rec in [current, *self.by_id.get(current["id"], [])]:
                if rec.get(column) not in (None, ""):
                    return rec
            current = self.rows.get(str(current.get("parent_id") or ""))
        return None

    def origin(self, row: dict[str, Any]) -> Origin:
        """The episode or file ``row`` descends from (as much as the manifests tell)."""
        sid = self.source_id(row)
        crawled = self.crawl.get(sid)
        root = self.rows.get(sid, {})
        if crawled is not None:
            return Origin(
                sid,
                str(crawled.get("source") or ""),
                str(crawled.get("title") or ""),
                str(crawled.get("licence") or ""),
                self.crawl_dirs[sid] / str(crawled["path"]),
            )
        source = str(root.get("source") or row.get("source") or "")
        is_url = "://" in source
        media = None if is_url or not source else Path(source)
        return Origin(sid, source, Path(source).stem if media else source, "", media)
