"""Segment stage: where speech is, whose gender, and utterance slices for training.

Reads: the previous stage's WAVs (the separate stage's vocals in the pipeline). Writes, per
input ``<out>/<id>/``: ``segments.csv`` (inaSpeechSegmenter's table: labels, start, stop;
labels ``male``, ``female`` or ``speech``, ``music``, ``noise``, ``noEnergy``),
``segments.TextGrid`` (Praat), ``energy.npy`` (10-ms frame energies, for re-slicing without the
model) and the slices ``<id>.<nnnn>.wav``; one :class:`SliceRow` per slice in
``manifest.csv``, and the slices it dropped (too short, other gender) in ``rejected.csv``.

With ``gender_engine: embedding`` the slices are embedded with Resemblyzer in batches
(:class:`malmoi.embedding.Embedder`), their gender told from those embeddings, and the
embeddings of the written slices saved in ``<out>/<id>/embeddings.npz`` with the input's key:
the speaker filter uses them instead of embedding the same slices again. With ``ina-slice`` the
gender CNN of inaSpeechSegmenter runs on a few patches of each slice's speech
(:class:`segment.ina.PatchGender`), from the features the speech detector computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf
from pydantic import Field

from malmoi.audio import decode_to_float_wav, sndfile_pcm, write_wav_like
from malmoi.config import ModelsConfig, SegmentConfig
from malmoi.files import atomic_path, temp_dir
from malmoi.ids import child_id
from malmoi.logs import get_logger
from malmoi.manifest import AudioRow
from malmoi.stage import Item, Result, Stage
from malmoi.tools import require_ffmpeg
from segment.gender import SR, classify
from segment.slicing import Segment, SliceParams, make_slices

FRAME = 0.01  # seconds per energy frame
EMBEDDINGS = "embeddings.npz"  # per input folder: the kept slices' Resemblyzer embeddings
EMBED_BATCH = 64  # slices embedded per call (their partial utterances batched)

log = get_logger(__name__)


class SliceRow(AudioRow):
    """One utterance slice cut from its parent."""

    start: float = Field(description="seconds into the parent")
    stop: float
    label: str = Field(description="the segmenter's label of the speech: male, female, speech")
    gender: str = Field(description="male, female, or '' when it could not be told")
    gender_score: float | None = Field(
        description="probability of that gender (embedding, ina-slice)"
    )
    gender_engine: str


def wanted_labels(params: SegmentConfig) -> tuple[str, ...]:
    """Speech labels that become slices; the gender filter comes after (as rejections)."""
    return ("male", "female") if params.gender_engine == "ina" else ("speech",)


def label_gender(label: str) -> str:
    """The gender a segment label states: ``male``, ``female``, or '' (plain ``speech``)."""
    return label if label in ("male", "female") else ""


def gender_rejection(gender: str, wanted: str) -> str | None:
    """Why a slice of ``gender`` ('' when unknown) is dropped under the filter ``wanted``
    (``male``, ``female`` or ``any``), or None when it is kept."""
    if wanted == "any" or gender == wanted:
        return None
    return f"gender {gender}, wanted {wanted}" if gender else "too little speech to tell the gender"


def slice_params(params: SegmentConfig, min_duration: float | None = None) -> SliceParams:
    return SliceParams(
        labels=wanted_labels(params),
        min_duration=params.min_duration if min_duration is None else min_duration,
        max_duration=params.max_duration,
        max_gap=params.max_gap,
        padding=params.padding,
    )


def energy_track(path: Path, frame: float = FRAME) -> np.ndarray:
    """Mean-square energy of ``frame``-second frames of the mono downmix, read block by block."""
    with sf.SoundFile(str(path)) as fh:
        hop = max(1, round(frame * fh.samplerate))
        parts = []
        for block in fh.blocks(blocksize=hop * 6000, dtype="float32", always_2d=True):
            mono = block.mean(axis=1).astype(np.float64)
            n = len(mono) // hop
            if n:
                parts.append(np.mean(mono[: n * hop].reshape(n, hop) ** 2, axis=1))
        return np.concatenate(parts) if parts else np.zeros(0)


def energy_fn(track: np.ndarray, frame: float = FRAME):
    def energy(start: float, stop: float) -> np.ndarray:
        return track[round(start / frame) : round(stop / frame)]

    return energy


def read_segments(path: Path) -> list[Segment]:
    """A ``segments.csv`` (tab-separated, inaSpeechSegmenter's layout) back into segments."""
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [Segment(r["labels"], float(r["start"]), float(r["stop"])) for r in rows]


def write_segments(segments: list[Segment], folder: Path) -> None:
    """``segments.csv`` and ``segments.TextGrid`` with inaSpeechSegmenter's own writers."""
    from inaSpeechSegmenter.export_funcs import seg2csv, seg2textgrid

    lseg = [(s.label, s.start, s.stop) for s in segments]
    with atomic_path(folder / "segments.csv") as tmp:
        seg2csv(lseg, str(tmp))
    if lseg:
        with atomic_path(folder / "segments.TextGrid") as tmp:
            seg2textgrid(lseg, str(tmp))


class SegmentStage(Stage[SegmentConfig, SliceRow]):
    """Segment every input with inaSpeechSegmenter and cut the wanted speech into slices."""

    name: ClassVar[str] = "segment"
    row_type: ClassVar[type[SliceRow]] = SliceRow
    unkeyed_params: ClassVar[frozenset[str]] = frozenset({"batch_size"})  # same labels

    def __init__(self, params: SegmentConfig, out_dir: Path, models: ModelsConfig | None = None):
        super().__init__(params, out_dir)
        self.models = models
        self.engine = None
        self.embedder = None  # Resemblyzer (gender_engine embedding)
        self.gender_weights: dict | None = None
        self.patch_gender = None  # the gender CNN on a few patches (gender_engine ina-slice)

    @classmethod
    def from_config(cls, cfg: Any) -> SegmentStage:
        return cls(cfg.segment, cfg.stage_dir(cls.name), models=cfg.models)

    def setup(self) -> None:
        from malmoi.models import ModelStore
        from segment.ina import InaEngine

        require_ffmpeg()
        store = ModelStore.from_config(self.models)
        vad = store.path("ina:speech-music-noise") / "keras_speech_music_noise_cnn.hdf5"
        gender = None
        if self.params.gender_engine == "ina":
            gender = store.path("ina:gender") / "keras_male_female_cnn.hdf5"
        elif self.params.gender_engine == "ina-slice":
            from segment.ina import PatchGender

            self.patch_gender = PatchGender(
                store.path("ina:gender") / "keras_male_female_cnn.hdf5",
                batch_size=self.params.batch_size,
            )
        else:
            from malmoi.embedding import Embedder
            from segment.gender import load_weights

            self.embedder = Embedder()
            self.gender_weights = load_weights()
        self.engine = InaEngine(
            vad,
            gender,
            self.params.chunk_seconds,
            self.params.margin_seconds,
            batch_size=self.params.batch_size,
        )

    def process(self, item: Item) -> Result[SliceRow]:
        folder = self.out_dir / item.id
        folder.mkdir(parents=True, exist_ok=True)
        if sndfile_pcm(item.path):
            return self._process(item, item.path, folder)
        # lossy stems (mp3, ogg) and what libsndfile cannot open (m4a, wma): decoded once by
        # ffmpeg, so segmentation, energy and slices all read the same samples
        with temp_dir(folder) as tmp:
            wav = Path(tmp) / "decoded.wav"
            frames, seconds = _known_length(item)
            decode_to_float_wav(item.path, wav, frames=frames, seconds=seconds)
            log.debug("%s: decoded %s to float WAV", item.id, item.path.suffix)
            return self._process(item, wav, folder)

    def _process(self, item: Item, src: Path, folder: Path) -> Result[SliceRow]:
        """Segment and slice ``src``: ``item``'s audio as PCM/float samples libsndfile reads."""
        assert self.engine is not None
        mspec, loge = self.engine.file_features(src, tmp_parent=folder)
        segments = self.engine.segments(mspec, loge)
        write_segments(segments, folder)
        track = energy_track(src)
        with atomic_path(folder / "energy.npy") as tmp, tmp.open("wb") as fh:
            np.save(fh, track.astype(np.float32))
        kept, rejected = make_slices(
            segments, slice_params(self.params), len(track) * FRAME, energy_fn(track), FRAME
        )
        pieces = sorted([(s, None) for s in kept] + rejected, key=lambda p: p[0].start)
        (folder / EMBEDDINGS).unlink(missing_ok=True)
        embedded = self._embed(src, pieces) if self.embedder is not None else {}
        told = self._told(pieces, embedded, segments, mspec, len(loge))
        del mspec, loge
        result: Result[SliceRow] = Result()
        ids, frames, embeddings = [], [], []
        with sf.SoundFile(str(src)) as fin:
            for k, (piece, reason) in enumerate(pieces, start=1):
                row, why = self._slice(item, fin, piece, k, folder, reason, told.get(k - 1))
                if why is None:
                    result.kept.append(row)
                    if k - 1 in embedded:
                        ids.append(row.id)
                        embeddings.append(embedded[k - 1][0])
                        frames.append(embedded[k - 1][2])
                else:
                    result.rejected.append((row, why))
        if self.embedder is not None:
            with atomic_path(folder / EMBEDDINGS) as tmp, tmp.open("wb") as fh:
                np.savez(
                    fh,
                    ids=np.array(ids, dtype=str),
                    frames=np.array(frames, dtype=np.int64),
                    emb=np.array(embeddings, dtype=np.float32).reshape(-1, 256),
                    key=np.array(self.key(item)),
                )
        return result

    def _told(
        self,
        pieces: list[tuple[Segment, str | None]],
        embedded: dict[int, tuple[np.ndarray, float, int]],
        segments: list[Segment],
        mspec: np.ndarray,
        frames: int,
    ) -> dict[int, tuple[str | None, float | None]]:
        """(gender, probability) of every piece not rejected yet, by index in ``pieces``, from
        its embedding (``embedding``) or the gender CNN on patches of its speech
        (``ina-slice``; ``frames``: the features' 10-ms frames); (None, None) when it cannot
        be told. Empty with ``ina``: the segment labels say the gender."""
        if self.gender_weights is not None:
            return {k: classify(e, s, self.gender_weights) for k, (e, s, _) in embedded.items()}
        if self.patch_gender is None:
            return {}
        from segment.ina import slice_speech, speech_track

        todo = [k for k, (_, reason) in enumerate(pieces) if reason is None]
        track = speech_track(segments, (frames + 1) // 2)
        speech = [slice_speech(track, pieces[k][0].start, pieces[k][0].stop) for k in todo]
        return dict(zip(todo, self.patch_gender.tell(mspec, speech), strict=True))

    def _embed(
        self, src: Path, pieces: list[tuple[Segment, str | None]]
    ) -> dict[int, tuple[np.ndarray, float, int]]:
        """Resemblyzer embedding (NaN with too little speech), seconds of speech left by its VAD
        and frames of every piece not rejected yet, by index in ``pieces``; ``EMBED_BATCH``
        slices per call, each read from ``src`` as :meth:`_slice` reads it (a float32 mono
        downmix)."""
        assert self.embedder is not None
        todo = [k for k, (_, reason) in enumerate(pieces) if reason is None]
        out: dict[int, tuple[np.ndarray, float, int]] = {}
        with sf.SoundFile(str(src)) as fin:
            sr = fin.samplerate
            for a in range(0, len(todo), EMBED_BATCH):
                wavs, lengths = [], []
                for k in todo[a : a + EMBED_BATCH]:
                    piece = pieces[k][0]
                    start, stop = round(piece.start * sr), round(piece.stop * sr)
                    fin.seek(start)
                    audio = fin.read(stop - start, dtype="float32", always_2d=True)
                    wavs.append(self.embedder.preprocess(audio.mean(axis=1), sr))
                    lengths.append(stop - start)
                emb = self.embedder.embed_preprocessed(wavs)
                batch = zip(todo[a : a + EMBED_BATCH], wavs, emb, lengths, strict=True)
                for k, w, e, n in batch:
                    out[k] = (e, len(w) / SR, n)
        return out

    def _slice(
        self,
        item: Item,
        fin: sf.SoundFile,
        piece: Segment,
        k: int,
        folder: Path,
        reason: str | None,
        told: tuple[str | None, float | None] | None = None,
    ) -> tuple[SliceRow, str | None]:
        sr = fin.samplerate
        a, b = round(piece.start * sr), round(piece.stop * sr)
        slice_id = child_id(item.id, f"{k:04d}")
        gender, score = label_gender(piece.label), None
        audio = None
        if reason is None:
            fin.seek(a)
            audio = fin.read(b - a, dtype="float32", always_2d=True)
            if told is not None:
                label, prob = told
                gender, score = label or "", prob
            reason = gender_rejection(gender, self.params.gender)
        path = ""
        if reason is None and audio is not None:
            path = f"{item.id}/{slice_id}.wav"
            write_wav_like(self.out_dir / path, audio, fin)
        row = self.make_row(
            item,
            id=slice_id,
            path=path,
            frames=b - a,
            sample_rate=sr,
            channels=fin.channels,
            start=round(a / sr, 4),
            stop=round(b / sr, 4),
            label=piece.label,
            gender=gender,
            gender_score=None if score is None else round(score, 4),
            gender_engine=self.params.gender_engine,
        )
        return row, reason


def _known_length(item: Item) -> tuple[int | None, float | None]:
    """The input's length in frames and seconds from the previous stage's row, when it says."""
    try:
        seconds = float(item.row["duration"])
        return round(seconds * int(item.row["sample_rate"])), seconds
    except (KeyError, TypeError, ValueError):
        return None, None
