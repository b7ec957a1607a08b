"""Crawl: download the web sources' media into the pipeline.

The crawl stage (:mod:`crawl.stage`) downloads the web sources, one module per engine:
:mod:`crawl.video` (yt-dlp: videos, playlists, channels, subtitles) and :mod:`crawl.podcast`
(RSS/Atom feeds, paginated channel pages), over the polite, resumable HTTP client
:mod:`crawl.http`; :mod:`crawl.web` holds what they share (episodes, links files, URL safety).
Its downloads are decoded by the ingest stage (:mod:`ingest`).
"""
