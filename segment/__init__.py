"""Segment stage: find speech, music, noise and silence, label speech by gender, and cut
utterance-sized slices (engine: inaSpeechSegmenter)."""

from malmoi.config import SegmentConfig
from malmoi.registry import Cli, StageSpec


def _models(cfg) -> list[str]:
    engine = cfg.segment.gender_engine
    gender = "resemblyzer:encoder" if engine == "embedding" else "ina:gender"
    return ["ina:speech-music-noise", gender]


SPEC = StageSpec(
    name="segment",
    stage="segment.stage:SegmentStage",
    config=SegmentConfig,
    description="find speech and gender, cut slices",
    input="separate",
    where=(("stem", "vocals"),),
    models=_models,
    weights=lambda cfg: (
        [("segment gender classifier", "segment", "gender_embedding.json")]
        if cfg.segment.gender_engine == "embedding"
        else []
    ),
    cli=Cli(
        inputs="decoded",
        options=("gender", "min_duration", "max_duration", "engine", "gender_engine", "padding"),
        help="Find speech, music, noise and silence, tell male from female, and cut slices: "
        "OUT/<id>/segments.csv and .TextGrid, OUT/<id>/<id>.<n>.wav, OUT/manifest.csv.\n\n"
        "Inputs are decoded first (into OUT/ingest/), so video files work too.",
    ),
)
