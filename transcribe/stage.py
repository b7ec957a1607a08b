"""Transcribe stage: each slice's text by ASR, its language, and the rules that judge them.

Reads: the previous stage's slices (denoise's in the pipeline; any audio or video files, or a
stage folder, from the CLI). With ``audio: undenoised`` ASR hears the same span before denoise
(the slice the denoise stage read), else the denoised slice itself. Writes the slice, linked,
to ``<out>/<parent>/<id>.wav`` and one :class:`TranscribeRow` per slice: the ASR text, the
language detected and its probability, Whisper's confidence measures, characters per second,
the words with their times (JSON), and where subtitles cover the slice their text and its CER
against the ASR text. ``rules.json`` records the settings the rows were partitioned by and what
each rule removed.

The model runs once per slice; the rules (:mod:`transcribe.rules`) partition the stored rows
once the loop is done, so a changed threshold re-partitions without loading the model.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf
from pydantic import Field

from malmoi.audio import probe, read_audio, sndfile_pcm
from malmoi.config import ModelsConfig, TranscribeConfig
from malmoi.errors import ItemError
from malmoi.files import atomic_write_text
from malmoi.logs import get_logger
from malmoi.manifest import AudioRow, Table, rejected_model
from malmoi.stage import Item, PassesSlicesOn, Result, Stage, StageReport
from malmoi.tools import MediaError
from transcribe.rules import partition

log = get_logger(__name__)

# ASR engines by ``transcribe.engine``: a class with ``from_params(params, models)`` and
# ``transcribe(audios_16k, language) -> list[Transcript]`` (transcribe/whisper.py's shape)
ENGINES = {"whisper": "transcribe.whisper:WhisperEngine"}
WAITING = "not judged yet (the run's rules are applied once every slice is transcribed)"
RULE_PARAMS = frozenset(
    {
        "enabled",
        "min_speech_share",
        "languages",
        "min_language_prob",
        "max_no_speech_prob",
        "no_speech_logprob",
        "max_compression_ratio",
        "max_chars_per_second",
        "rate_fence",
        "rate_min_slices",
        "max_cer",
        "subtitle_mismatch",
    }
)


class TranscribeRow(AudioRow):
    """A slice with what ASR heard in it and the text it gets."""

    start: float | None = Field(None, description="seconds into the source track (slices)")
    stop: float | None = None
    gender: str = Field("", description="as the segment stage told it")
    text: str = Field("", description="the slice's text: the subtitle where it agrees, else ASR")
    text_source: str = Field("", description="subtitles or asr")
    asr_text: str = Field("", description="what ASR heard")
    language: str = Field("", description="the language detected in the slice")
    language_prob: float | None = Field(None, description="its probability")
    avg_logprob: float | None = Field(None, description="Whisper: mean token log-probability")
    no_speech_prob: float | None = Field(None, description="Whisper: no-speech probability")
    compression_ratio: float | None = Field(None, description="gzip ratio of the ASR text")
    speech_seconds: float | None = Field(None, description="speech Silero VAD finds in it")
    chars_per_second: float | None = Field(
        None, description="characters of the ASR text (spoken form, no spaces) per second"
    )
    words: str = Field("[]", description="JSON list of {start, end, word, p}, seconds in slice")
    heard: str = Field("", description="denoised or undenoised: the audio ASR heard")
    subtitle_text: str = Field("", description="the subtitle cues of the slice's span")
    cer: float | None = Field(None, description="CER of the subtitle against the ASR text")
    asr_model: str = Field("", description="the model that transcribed it")


class TranscribeStage(PassesSlicesOn, Stage[TranscribeConfig, TranscribeRow]):
    """Transcribe each slice (batched), store every measurement, judge them after the loop."""

    name: ClassVar[str] = "transcribe"
    version: ClassVar[str] = "1"
    row_type: ClassVar[type[TranscribeRow]] = TranscribeRow
    settings_file: ClassVar[str] = "rules.json"
    unkeyed_params: ClassVar[frozenset[str]] = RULE_PARAMS | {"batch_size", "threads"}

    def __init__(self, params: TranscribeConfig, out_dir: Path, models: ModelsConfig | None = None):
        super().__init__(params, out_dir)
        self.models = models
        self.engine: Any = None
        self._todo: list[Item] = []  # this run's items in order: process() batches ahead
        self._position: dict[str, int] = {}
        self._ready_now: dict[str, Any] = {}  # id -> Transcript or the exception of its audio
        self._lineages: dict[Path | None, Any] = {}
        self._subtitles: Any = None  # transcribe.subtitles.SubtitleText, made on first use
        self._before: dict[Path, dict[str, Path]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any) -> TranscribeStage:
        return cls(cfg.transcribe, cfg.stage_dir(cls.name), models=cfg.models)

    def setup(self) -> None:
        from malmoi.registry import load

        engine = load(ENGINES[self.params.engine])
        self.engine = engine.from_params(self.params, self.models)

    def prepare(self, items: list[Item]) -> None:
        self._todo = list(items)
        self._position = {it.id: i for i, it in enumerate(self._todo)}
        self._ready_now = {}

    # --- per item ---------------------------------------------------------------------------

    def process(self, item: Item) -> Result[TranscribeRow]:
        with self._lock:
            if item.id not in self._ready_now:
                self._transcribe_batch(item)
            got = self._ready_now.pop(item.id)
        if isinstance(got, Exception):
            raise got
        transcript, duration = got
        from transcribe.cer import cer, spoken_length

        subtitle = self._subtitle(item)
        info = self._info(item.path)
        rel = self.link_input(item)
        measured = dataclasses.asdict(transcript)
        text, words = measured.pop("text"), measured.pop("words")
        row = self.make_row(
            item,
            id=item.id,
            parent_id=str(item.row.get("parent_id") or ""),
            path=rel,
            frames=info[0],
            sample_rate=info[1],
            channels=info[2],
            **measured,  # language and its probability, Whisper's measures, VAD's speech
            asr_text=text,
            chars_per_second=round(spoken_length(text) / duration, 3) if duration > 0 else None,
            words=json.dumps(words, ensure_ascii=False),
            heard=self._heard_kind(item),
            subtitle_text=subtitle,
            cer=round(cer(subtitle, text), 4) if subtitle else None,
            asr_model=self.params.model,
        )
        # the partition is after_run's: until then a slice stands rejected (never passed on
        # unjudged by an interrupted run)
        return Result(rejected=[(row, WAITING)])

    def _transcribe_batch(self, item: Item) -> None:
        """Transcribe ``item`` and the next items of the run not done yet, up to the batch
        size, together; remember each one's transcript (or why its audio failed)."""
        batch = [item]
        at = self._position.get(item.id)
        if at is not None:
            for later in self._todo[at + 1 :]:
                if len(batch) >= self.params.batch_size:
                    break
                if later.id not in self._ready_now:
                    batch.append(later)
        audios: list[np.ndarray] = []
        ok: list[Item] = []
        for it in batch:
            try:
                audio = self._audio(it)
            except Exception as exc:  # one bad slice costs only itself
                self._ready_now[it.id] = exc
                continue
            audios.append(audio)
            ok.append(it)
        if not ok:
            return
        self.ensure_setup()
        language = None if self.params.language == "auto" else self.params.language
        for it, audio, transcript in zip(
            ok, audios, self.engine.transcribe(audios, language), strict=True
        ):
            self._ready_now[it.id] = (transcript, len(audio) / 16000)

    def _audio(self, item: Item) -> np.ndarray:
        """What ASR hears of ``item``: 16-kHz mono float32."""
        path = self._heard_path(item)
        try:
            audio = read_audio(path, 16000)
        except MediaError as exc:
            raise ItemError(f"{path}: {exc}") from None
        if len(audio) < 1600:
            raise ItemError(f"{path}: too short for ASR ({len(audio) / 16000:.2f} s)")
        return audio

    def _heard_kind(self, item: Item) -> str:
        return "undenoised" if self._heard_path(item) != item.path else "denoised"

    def _heard_path(self, item: Item) -> Path:
        """The denoised slice, or with ``audio: undenoised`` the slice denoise read (when the
        item comes from a denoise folder whose input is on disk)."""
        if self.params.audio == "denoised" or item.folder is None:
            return item.path
        before = self._before_denoise(item.folder)
        found = before.get(str(item.row.get("parent_id") or ""))
        return found if found is not None and found.exists() else item.path

    def _before_denoise(self, folder: Path) -> dict[str, Path]:
        """id -> file of the rows of the folders ``folder``'s denoise run read ({} when
        ``folder`` is not a denoise folder)."""
        if folder not in self._before:
            from malmoi.folders import read_record, stage_name
            from malmoi.manifest import MANIFEST, read_records

            paths: dict[str, Path] = {}
            if stage_name(folder) == "denoise":
                for rel in read_record(folder).get("inputs", []):
                    inp = Path(folder) / str(rel)
                    for rec in read_records(inp / MANIFEST):
                        paths[rec["id"]] = (inp / rec["path"]).absolute()
            self._before[folder] = paths
        return self._before[folder]

    def _subtitle(self, item: Item) -> str:
        """The subtitle text of the slice's span ('' when no subtitles cover it): the media
        and offsets its lineage tells, or for a file given by itself the whole file."""
        from malmoi.lineage import Lineage
        from transcribe.subtitles import SubtitleText

        if item.folder not in self._lineages:
            self._lineages[item.folder] = (
                Lineage(None) if item.folder is None else Lineage.following(item.folder)
            )
        lineage = self._lineages[item.folder]
        row = item.row or {"id": item.id, "source": item.source}
        media = lineage.origin(row).media
        start, stop = lineage.value(row, "start"), lineage.value(row, "stop")
        if start is None and item.folder is None:  # a whole file: its own subtitles
            media, start, stop = item.path, 0.0, self._duration(item.path)
        if media is None or start is None:
            return ""
        start = float(start)
        stop = float(stop) if stop is not None else start
        if self._subtitles is None:  # one reader a run: each subtitle file parsed once
            self._subtitles = SubtitleText(self.params.subtitle_languages)
        try:
            return self._subtitles.text(media, start, stop)
        except ItemError as exc:  # a broken subtitle file costs the check, not the slice
            log.warning("%s", exc)
            return ""

    @classmethod
    def _duration(cls, path: Path) -> float:
        frames, rate, _ = cls._info(path)
        return frames / rate if rate else 0.0

    @staticmethod
    def _info(path: Path) -> tuple[int, int, int]:
        """(frames, sample rate, channels) of a slice."""
        if sndfile_pcm(path):
            info = sf.info(str(path))
            return int(info.frames), int(info.samplerate), int(info.channels)
        p = probe(path)
        return round((p.duration or 0.0) * p.sample_rate), p.sample_rate, p.channels

    # --- after the loop: the rules ------------------------------------------------------------

    def after_run(self, report: StageReport) -> None:
        kept_t = Table(self.out_dir, TranscribeRow)
        rej_t = Table(self.out_dir, rejected_model(TranscribeRow))
        rows = kept_t.records() + rej_t.records()
        if not rows:
            return
        kept, rejected, fences = partition(rows, self.params)
        self.repartition_linked(kept, rejected, report)
        report.rejected_by_reason = {}
        for r in rejected:
            rule = rule_of(r["reason"])
            report.rejected_by_reason[rule] = report.rejected_by_reason.get(rule, 0) + 1
        info = {
            "settings": self.settings(),
            "rate_fences": [None if not np.isfinite(f) else round(f, 3) for f in fences],
            "kept": len(kept),
            "rejected": len(rejected),
            "rejected_by_rule": report.rejected_by_reason,
        }
        atomic_write_text(self.out_dir / "rules.json", json.dumps(info, indent=1) + "\n")
        log.info(
            "transcribe: %d kept, %d rejected (%s)",
            len(kept),
            len(rejected),
            ", ".join(f"{k}: {v}" for k, v in report.rejected_by_reason.items()) or "none",
        )

    def settings(self) -> dict[str, Any]:
        """The rules' settings: a change re-partitions the stored rows."""
        return {
            **self.params.model_dump(mode="json", include=set(RULE_PARAMS - {"enabled"})),
            "version": self.version,
        }


def rule_of(reason: str) -> str:
    """The rule a rejection reason names (its words before the first parenthesis or number)."""
    head = reason.split(" (", 1)[0]
    if head.startswith("language "):
        return "language"
    if head.startswith("speaking rate"):
        return "speaking rate"
    if head.startswith("runaway"):
        return "runaway output"
    return head
