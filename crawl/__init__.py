"""Crawl and ingest: get media into the pipeline.

The crawl stage (:mod:`crawl.stage`) downloads the web sources, one module per engine:
:mod:`crawl.video` (yt-dlp: videos, playlists, channels, subtitles) and :mod:`crawl.podcast`
(RSS/Atom feeds, paginated channel pages), over the polite, resumable HTTP client
:mod:`crawl.http`; :mod:`crawl.web` holds what they share (episodes, links files, URL safety).
Sources on disk come from :mod:`crawl.local` and the demo's generated media from
:mod:`crawl.synthetic`; :mod:`crawl.ingest` decodes all of it into the pipeline's working WAV
format, with a manifest.
"""
