"""Separate stage: each input WAV → ``<out>/<id>/vocals.<codec>`` and
``<out>/<id>/accompaniment.<codec>``.

Reads: the ingest stage's manifest (working WAVs at any rate). Writes: two stems per input, of
the input's length, rate and channels (an engine that needs its own rate, Spleeter's 44.1 kHz,
gets the input resampled, and its stems are resampled back), and two :class:`SeparateRow` per
input in ``manifest.csv`` (ids ``<input id>.vocals`` and ``<input id>.accompaniment``), with
each stem's level and its share of the total energy.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from malmoi.audio import energy, resample_wav, wav_info
from malmoi.config import ModelsConfig, SeparateConfig
from malmoi.files import temp_dir
from malmoi.ids import child_id
from malmoi.logs import get_logger
from malmoi.manifest import AudioRow
from malmoi.stage import Item, Result, Stage
from malmoi.tools import require_ffmpeg
from separate.align import encode_aligned
from separate.base import Engine

log = get_logger(__name__)


class SeparateRow(AudioRow):
    """One stem of one input."""

    stem: str = Field(description="vocals or accompaniment")
    engine: str
    codec: str
    level_db: float = Field(description="RMS level of the stem, dB full scale")
    share: float = Field(description="the stem's share of the two stems' energy, 0..1")


def make_engine(params: SeparateConfig, models: ModelsConfig | None = None) -> Engine:
    """Load the configured engine (Spleeter's weights come verified from the model store)."""
    if params.engine == "spleeter":
        from malmoi.models import ModelStore
        from separate.spleeter import SpleeterEngine

        model_dir = ModelStore.from_config(models).path("spleeter:2stems")
        return SpleeterEngine(model_dir, chunk_seconds=params.chunk_seconds, threads=params.threads)
    from separate.repet import RepetEngine

    return RepetEngine(chunk_seconds=params.chunk_seconds, overlap_seconds=params.overlap_seconds)


class SeparateStage(Stage[SeparateConfig, SeparateRow]):
    """Split every input into vocals and accompaniment with the configured engine."""

    name: ClassVar[str] = "separate"
    row_type: ClassVar[type[SeparateRow]] = SeparateRow
    unkeyed_params: ClassVar[frozenset[str]] = frozenset({"threads"})

    def __init__(self, params: SeparateConfig, out_dir: Path, models: ModelsConfig | None = None):
        super().__init__(params, out_dir)
        self.models = models
        self.engine: Engine | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> SeparateStage:
        return cls(cfg.separate, cfg.stage_dir(cls.name), models=cfg.models)

    def setup(self) -> None:
        require_ffmpeg()
        self.engine = make_engine(self.params, self.models)

    def process(self, item: Item) -> Result[SeparateRow]:
        assert self.engine is not None
        folder = self.out_dir / item.id
        folder.mkdir(parents=True, exist_ok=True)
        stems = self.engine.stems
        codec = self.params.codec
        with temp_dir(folder) as tmpdir:
            tmp = {s: Path(tmpdir) / f"{s}.wav" for s in stems}
            self._separate(item.path, tmp, Path(tmpdir))
            info = wav_info(tmp[stems[0]])
            energies = {s: energy(tmp[s])[0] for s in stems}
            for s in stems:  # into place only when both are complete
                if codec == "wav":
                    os.replace(tmp[s], folder / f"{s}.wav")
                else:
                    encode_aligned(tmp[s], folder / f"{s}.{codec}", codec)
        total = sum(energies.values()) or 1.0
        rows = []
        for s in stems:
            rms = math.sqrt(energies[s] / max(info.frames, 1))
            rows.append(
                self.make_row(
                    item,
                    id=child_id(item.id, s),
                    path=f"{item.id}/{s}.{codec}",
                    frames=info.frames,
                    sample_rate=info.sample_rate,
                    channels=info.channels,
                    stem=s,
                    engine=self.params.engine,
                    codec=codec,
                    level_db=round(20 * math.log10(max(rms, 1e-10)), 2),
                    share=round(energies[s] / total, 4),
                )
            )
        return Result(kept=rows)

    def _separate(self, in_wav: Path, out: dict[str, Path], tmpdir: Path) -> None:
        """Run the engine at its model's rate: resample the input to it and the stems back to
        the input's rate, cut or padded to exactly the input's frame count."""
        assert self.engine is not None
        stems, rate = self.engine.stems, self.engine.model_rate
        src = wav_info(in_wav)
        if rate is None or rate == src.sample_rate:
            self.engine.separate_file(in_wav, out[stems[0]], out[stems[1]])
            return
        log.debug("%s: %d Hz input, resampled to %d Hz and back", in_wav, src.sample_rate, rate)
        model_in = tmpdir / f"input.{rate}.wav"
        resample_wav(in_wav, model_in, rate)
        model_out = {s: tmpdir / f"{s}.{rate}.wav" for s in stems}
        self.engine.separate_file(model_in, model_out[stems[0]], model_out[stems[1]])
        model_in.unlink()
        for s in stems:
            resample_wav(model_out[s], out[s], src.sample_rate, frames=src.frames)
            model_out[s].unlink()
