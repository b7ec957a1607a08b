"""Ingest: decode audio or video files into the pipeline's working format.

Reads: media files (any container/codec ffmpeg knows, e.g. mp4, mkv, webm, mp3, m4a, wav, flac,
ogg). Writes: ``<out>/audio/<id>.wav`` (16-bit PCM at ``sample_rate``) and one
:class:`IngestRow` per input in ``<out>/manifest.csv``; unreadable inputs go to
``failures.csv``. Inputs are never modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from malmoi.audio import decode_to_wav, probe, wav_info
from malmoi.config import IngestConfig
from malmoi.errors import ItemError
from malmoi.manifest import AudioRow
from malmoi.stage import Item, Result, Stage
from malmoi.tools import require_ffmpeg


class IngestRow(AudioRow):
    """A decoded input file."""

    source_format: str = Field(description="container as ffprobe names it")
    source_codec: str = Field(description="audio codec of the input")
    source_duration: float = Field(
        description="audio duration ffprobe reported for the input; the decoded duration when "
        "the container states none (streamed WebM/MKV)"
    )
    source_sample_rate: int
    source_channels: int
    has_video: bool = Field(description="the input had a video track")


class IngestStage(Stage[IngestConfig, IngestRow]):
    """Decode each input's first audio stream to WAV, with a manifest row per input."""

    name: ClassVar[str] = "ingest"
    row_type: ClassVar[type[IngestRow]] = IngestRow
    unkeyed_params: ClassVar[frozenset[str]] = frozenset({"extensions"})  # discovery only

    def setup(self) -> None:
        require_ffmpeg()

    def out_channels(self, source_channels: int) -> int:
        if self.params.channels == "mono":
            return 1
        if self.params.channels == "stereo":
            return 2
        return 1 if source_channels == 1 else 2

    def process(self, item: Item) -> Result[IngestRow]:
        info = probe(item.path)  # streamed WebM/MKV state no duration: judged by decoding
        rel = Path("audio") / f"{item.id}.wav"
        channels = self.out_channels(info.channels)
        decode_to_wav(
            item.path,
            self.out_dir / rel,
            self.params.sample_rate,
            channels,
            exact_duration=info.stream_duration,
        )
        out = wav_info(self.out_dir / rel)
        if out.frames == 0:
            (self.out_dir / rel).unlink(missing_ok=True)
            raise ItemError("decoded to zero samples (empty audio stream)")
        row = self.make_row(
            item,
            id=item.id,
            parent_id="",
            path=rel.as_posix(),
            frames=out.frames,
            sample_rate=out.sample_rate,
            channels=out.channels,
            source_format=info.format_name,
            source_codec=info.codec,
            source_duration=out.duration if info.duration is None else info.duration,
            source_sample_rate=info.sample_rate,
            source_channels=info.channels,
            has_video=info.has_video,
        )
        return Result(kept=[row])
