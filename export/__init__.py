"""Export: the training-ready dataset (audio, manifests, splits, texts, card, verification)."""

from malmoi.config import ExportConfig
from malmoi.registry import StageSpec

SPEC = StageSpec(
    name="export",
    stage="export.stage:ExportStage",
    config=ExportConfig,
    description="write the dataset: WAVs, manifests, splits, texts, card",
)
