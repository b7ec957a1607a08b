"""Ingest: get every input into the pipeline's working format.

The ingest stage (:mod:`ingest.stage`) decodes audio and video files into WAVs with a manifest.
Its inputs come from the config's sources, one module per kind: :mod:`ingest.local` (files and
folders on disk), :mod:`ingest.synthetic` (the demo's generated media) — gathered by
:mod:`ingest.sources` — and the crawl stage's downloads (:mod:`crawl`), its input stage when the
config has web sources.
"""

from malmoi.config import IngestConfig
from malmoi.registry import Cli, StageSpec

SPEC = StageSpec(
    name="ingest",
    stage="ingest.stage:IngestStage",
    config=IngestConfig,
    description="decode every input to working WAVs",
    gather="ingest.sources:gather_all",
    cli=Cli(
        inputs="media",
        options=("sample_rate", "channels"),
        help="Decode audio/video files into WAVs with a manifest (failures are listed, not fatal).",
    ),
)
