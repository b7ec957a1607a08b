"""Transcribe stage: Korean text for every slice by ASR (faster-whisper), its language, the rules
that reject no speech, other languages, hallucinations and speaking-rate outliers, and the
subtitles checked against the audio."""

from typing import Any

from malmoi.config import TranscribeConfig
from malmoi.registry import Cli, Option, StageSpec
from transcribe.models import WHISPER_MODELS


def _model_names(cfg: Any) -> list[str]:
    """The store's model the config loads (none for a folder given as a path)."""
    return [cfg.transcribe.model] if cfg.transcribe.model in WHISPER_MODELS else []


SPEC = StageSpec(
    name="transcribe",
    stage="transcribe.stage:TranscribeStage",
    config=TranscribeConfig,
    description="ASR text, language and checks for every slice",
    applies=lambda cfg: cfg.transcribe.enabled,
    unused="transcribe.enabled is false",
    models=_model_names,
    weights_in_store=WHISPER_MODELS,
    cli=Cli(
        inputs="media",
        options=(
            Option("model", help="A model store name (whisper:base…) or a CTranslate2 folder."),
            Option("language", help="Decode in this language (ko…), or auto: as detected."),
            Option("languages", help="Languages a slice may be in, e.g. ko,en (others rejected)."),
            Option("audio", help="What ASR hears: the denoised slice or the span before denoise."),
            Option("min_language_prob"),
            Option("max_cer"),
            Option("subtitle_mismatch"),
            Option("batch_size"),
            Option("beam_size"),
        ),
        help="Transcribe each input with Whisper (faster-whisper): its text, language and "
        "confidence, checked against its subtitles where it has them; slices that are no "
        "speech, another language, a hallucination or a speaking-rate outlier are rejected "
        "with the reason: OUT/manifest.csv, OUT/rejected.csv, OUT/rules.json.",
    ),
)
