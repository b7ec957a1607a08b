"""Crawl: download the web sources' media into the pipeline.

The crawl stage (:mod:`crawl.stage`) downloads the web sources, one module per engine:
:mod:`crawl.video` (yt-dlp: videos, playlists, channels, subtitles) and :mod:`crawl.podcast`
(RSS/Atom feeds, paginated channel pages), over the polite, resumable HTTP client
:mod:`crawl.http`; :mod:`crawl.web` holds what they share (episodes, links files, URL safety).
Its downloads are decoded by the ingest stage (:mod:`ingest`).
"""

from malmoi.config import CrawlConfig, web_sources
from malmoi.registry import StageSpec

SPEC = StageSpec(
    name="crawl",
    stage="crawl.stage:CrawlStage",
    config=CrawlConfig,
    description="download the video and podcast sources",
    input=None,
    gather="crawl.stage:gather",
    applies=lambda cfg: bool(web_sources(cfg)),
    unused="no web sources",
    dask=False,  # its politeness limits (per host, per process) hold in one process
)
