"""Crawl stage: get media into the pipeline.

One module per engine: :mod:`crawl.local` (files and folders on disk), :mod:`crawl.synthetic`
(the demo's generated media); :mod:`crawl.ingest` decodes whatever was gathered into the
pipeline's working WAV format, with a manifest.
"""
