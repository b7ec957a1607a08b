"""A small stage that is not in the product, for tests/test_registry.py: the proof that a stage is
its package plus one registry line. It measures each slice's level (RMS, dBFS), writes the slice
again as float WAV, and rejects slices quieter than ``min_dbfs``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf
from pydantic import Field

from malmoi.config import StrictModel
from malmoi.files import atomic_path
from malmoi.ids import child_id
from malmoi.manifest import AudioRow
from malmoi.registry import Cli, StageSpec
from malmoi.stage import Item, Result, Stage


class LevelConfig(StrictModel):
    """The level stage's section."""

    min_dbfs: float = Field(-70.0, le=0, description="slices quieter than this are rejected")


class LevelRow(AudioRow):
    level_dbfs: float = Field(description="RMS level of the slice, dBFS")
    text: str = Field("", description="a text for the slice (as a transcribing stage writes)")
    text_source: str = "level"


class LevelStage(Stage[LevelConfig, LevelRow]):
    name: ClassVar[str] = "level"
    row_type: ClassVar[type[LevelRow]] = LevelRow

    def process(self, item: Item) -> Result[LevelRow]:
        audio, sr = sf.read(str(item.path), dtype="float32", always_2d=True)
        level = float(20 * np.log10(max(float(np.sqrt(np.mean(audio**2))), 1e-10)))
        new_id = child_id(item.id, "level")
        rel = f"{Path(str(item.row.get('parent_id') or item.id)).name}/{new_id}.wav"
        (self.out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out_dir / rel) as tmp:  # outputs are written atomically
            sf.write(str(tmp), audio, sr, subtype="FLOAT", format="WAV")
        row = self.make_row(
            item,
            id=new_id,
            path=rel,
            frames=len(audio),
            sample_rate=sr,
            channels=audio.shape[1],
            level_dbfs=round(level, 2),
            text=f"레벨 {level:.0f} dBFS",
            text_source="level",  # its own (make_row would carry transcribe's 'asr' forward)
        )
        if level < self.params.min_dbfs:
            return Result(rejected=[(row, f"level {level:.1f} dBFS under {self.params.min_dbfs}")])
        return Result(kept=[row])


SPEC = StageSpec(
    name="level",
    stage="tests.level_stage:LevelStage",
    config=LevelConfig,
    description="measure each slice's level, reject the quiet ones",
    cli=Cli(inputs="audio", options=("min_dbfs",), help="Measure each slice's level (dBFS)."),
)
