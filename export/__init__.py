"""Export: the training-ready dataset (audio, manifests, splits, texts, card, verification).

Each slice's text follows ``export.text``: the transcribe stage's choice (auto), the subtitles,
the ASR text, or none; ``metadata.txt`` holds it also in the Korean spoken form."""

from malmoi.config import ExportConfig
from malmoi.registry import StageSpec

SPEC = StageSpec(
    name="export",
    stage="export.stage:ExportStage",
    config=ExportConfig,
    description="write the dataset: WAVs, manifests, splits, texts, card",
)
