"""Separate stage: split each input into a vocals track and a background track.

Engines (one module each) arrive with the separate stage: ``spleeter`` (Deezer Spleeter 2stems),
``repet`` (a weight-free REPET-SIM baseline).
"""

from malmoi.config import SeparateConfig
from malmoi.registry import Cli, StageSpec

SPEC = StageSpec(
    name="separate",
    stage="separate.stage:SeparateStage",
    config=SeparateConfig,
    description="split into vocals and accompaniment",
    input="ingest",
    models=lambda cfg: ["spleeter:2stems"] if cfg.separate.engine == "spleeter" else [],
    cli=Cli(
        inputs="decoded",
        options=("engine", "codec", "chunk_seconds", "threads"),
        help="Split inputs into vocals and accompaniment: OUT/<id>/vocals.<codec>, "
        "accompaniment.<codec>.\n\nInputs are decoded first (into OUT/ingest/), so video files "
        "work too.",
    ),
)
