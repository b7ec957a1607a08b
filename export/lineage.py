"""Where a slice comes from: its lineage through the manifests of the stages before it.

A build's stages write ``<output_dir>/<stage>/manifest.csv``; every row names its parent
(``parent_id``). :class:`Lineage` reads those manifests once and answers, for a slice, the id of
the episode or input file it descends from (the ingest row at the root: the unit of the splits),
that source's URL or path, title, licence and original media file (for its subtitles), and the
speaker filter's similarity of the slice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malmoi.manifest import MANIFEST, read_records

STAGES = ("crawl", "ingest", "separate", "segment", "speaker_filter", "denoise")


@dataclass(frozen=True)
class Origin:
    """The episode or input file a slice descends from."""

    source_id: str
    url: str  # the episode URL (crawled) or the original file's path
    title: str
    licence: str
    media: Path | None  # the original media file on disk (subtitles lie beside it)


class Lineage:
    """The manifests of the stage folders under ``root`` (a build's ``output_dir``)."""

    def __init__(self, root: Path | None):
        self.root = root
        self.rows: dict[str, dict[str, Any]] = {}
        self.crawl: dict[str, dict[str, Any]] = {}
        self.similarity: dict[str, float] = {}
        if root is None:
            return
        for stage in STAGES:
            for rec in read_records(root / stage / MANIFEST):
                if stage == "crawl":
                    self.crawl[rec["id"]] = rec
                    continue
                self.rows.setdefault(rec["id"], rec)
                if stage == "speaker_filter" and rec.get("similarity") not in (None, ""):
                    self.similarity[rec["id"]] = float(rec["similarity"])

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

    def similarity_of(self, row: dict[str, Any]) -> float | None:
        """The speaker filter's similarity of ``row`` or of the nearest row it descends from
        (a denoised slice's parent is the filtered slice)."""
        current, seen = row, set()
        while current is not None and current["id"] not in seen:
            seen.add(current["id"])
            if current["id"] in self.similarity:
                return self.similarity[current["id"]]
            current = self.rows.get(str(current.get("parent_id") or ""))
        return None

    def origin(self, row: dict[str, Any]) -> Origin:
        """The episode or file ``row`` descends from (as much as the manifests tell)."""
        sid = self.source_id(row)
        crawled = self.crawl.get(sid)
        root = self.rows.get(sid, {})
        if crawled is not None and self.root is not None:
            return Origin(
                sid,
                str(crawled.get("source") or ""),
                str(crawled.get("title") or ""),
                str(crawled.get("licence") or ""),
                self.root / "crawl" / str(crawled["path"]),
            )
        source = str(root.get("source") or row.get("source") or "")
        is_url = "://" in source
        media = None if is_url or not source else Path(source)
        return Origin(sid, source, Path(source).stem if media else source, "", media)
