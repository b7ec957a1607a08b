"""Turn the config's ``sources`` into ingest items, one engine module per kind of source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest import local, synthetic
from malmoi.config import WEB_SOURCES, IngestConfig, LocalSource, SyntheticSource
from malmoi.stage import Item


def gather(
    source: LocalSource | SyntheticSource, raw_dir: Path, ingest: IngestConfig
) -> list[Item]:
    """The items of one source; generated or downloaded media goes under ``raw_dir``."""
    if isinstance(source, SyntheticSource):
        return [local.file_item(p) for p in synthetic.generate(source, raw_dir / "synthetic")]
    return list(local.discover(source.paths, ingest.extensions, source.recursive))


def gather_all(cfg: Any) -> list[Item]:
    """Ingest's inputs from a pipeline config's local and generated sources (the crawl's
    downloads come after them, from the crawl stage's manifest: its input stage)."""
    return [
        i
        for src in cfg.sources
        if not isinstance(src, WEB_SOURCES)
        for i in gather(src, cfg.output_dir / "raw", cfg.ingest)
    ]
