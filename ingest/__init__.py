"""Ingest: get every input into the pipeline's working format.

The ingest stage (:mod:`ingest.stage`) decodes audio and video files into WAVs with a manifest.
Its inputs come from the config's sources, one module per kind: :mod:`ingest.local` (files and
folders on disk), :mod:`ingest.synthetic` (the demo's generated media) — gathered by
:mod:`ingest.sources` — and the crawl stage's downloads (:mod:`crawl`).
"""
