"""Ingest: decode audio or video files into the pipeline's working format.

Reads: media files (any container/codec ffmpeg knows, e.g. mp4, mkv, webm, mp3, m4a, wav, flac,
ogg). Writes: ``<out>/audio/<id>.wav`` (16-bit PCM at ``sample_rate``) and one
:class:`IngestRow` per input in ``<out>/manifest.csv``; unreadable inputs go to
``failures.csv``. Inputs are never modified. A row records the sha256 of its WAV's samples
and, for a crawled episode, its publication day (``date``, from the crawl's row): export's
duplicate check reads both.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from malmoi.audio import decode_to_wav, pcm_sha256, probe, wav_info
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
    audio_sha256: str = Field(
        "",
        description="sha256 of the decoded WAV's samples (not of the file's bytes): two inputs "
        "with the same audio have the same (export's duplicate check)",
    )
    date: str = Field(
        "",
        description="the crawled episode's publication day, YYYY-MM-DD ('' for local files): "
        "export keeps the earliest of duplicate sources",
    )


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
            audio_sha256=pcm_sha256(self.out_dir / rel),
        )
        return Result(kept=[row])
