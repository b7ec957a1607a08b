"""inaSpeechSegmenter (speech / music / noise / silence, and gender), with bounded memory.

The segmenter is built once per process from model files in the store (never from
``~/.keras`` or the network). inaSpeechSegmenter's own call holds the whole file's features
and CNN patches (a 60-minute file peaks near 6 GB), so long inputs are processed like this:

1. features (mel spectrogram and log energy, 10-ms frames of 25 ms) are computed block by
   block: every frame is local, so blocks with 15 ms of look-ahead give identical features;
2. the energy activity detection runs over the whole log-energy track, as inaSpeechSegmenter
   does (its threshold is the mean over the file, so it must not be done per chunk);
3. the speech/music/noise CNN and the gender CNN run per chunk of ``chunk_seconds`` with
   ``margin_seconds`` of context on each side, keeping each chunk's own 20-ms labels.

The result equals whole-file processing except close to chunk seams (where the CNN's Viterbi
smoothing sees a different context).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf

from malmoi.files import temp_dir
from malmoi.tools import run_ffmpeg
from segment.slicing import Segment

SR = 16000
HOP = 160  # 10-ms frames
WIN = 400  # of 25 ms
UNIT = 0.02  # inaSpeechSegmenter labels 20-ms units (two frames)
MIN_FRAMES = 68  # the CNN's patch length


class InaEngine:
    """inaSpeechSegmenter ``smn`` VAD, optionally with its gender CNN, loaded once."""

    name: ClassVar[str] = "ina"

    def __init__(
        self,
        vad_model: Path,
        gender_model: Path | None = None,
        chunk_seconds: float = 300.0,
        margin_seconds: float = 20.0,
        batch_size: int = 32,
        energy_ratio: float = 0.03,
    ):
        import inaSpeechSegmenter.segmenter as iss
        from tensorflow import keras

        def from_store(cls: type, path: Path) -> object:
            class FromStore(cls):  # type: ignore[misc, valid-type]
                def __init__(self) -> None:  # DnnSegmenter.__init__ without get_remote
                    self.nn = keras.models.load_model(str(path), compile=False)
                    self.nn.run_eagerly = False
                    predict = self.nn.predict
                    self.nn.predict = lambda x, batch_size=None, verbose=0: predict(
                        x, batch_size=batch_size, verbose=0
                    )
                    self.batch_size = batch_size

            FromStore.__name__ = cls.__name__
            return FromStore()

        self._iss = iss
        seg = iss.Segmenter.__new__(iss.Segmenter)  # Segmenter.__init__ would call get_remote
        seg.ffmpeg = "ffmpeg"
        seg.energy_ratio = energy_ratio
        seg.vad = from_store(iss.SpeechMusicNoise, vad_model)
        seg.detect_gender = gender_model is not None
        if gender_model is not None:
            seg.gender = from_store(iss.Gender, gender_model)
        self.segmenter = seg
        self.chunk_seconds = chunk_seconds
        self.margin_seconds = margin_seconds

    def segment_file(self, path: Path, tmp_parent: Path | None = None) -> list[Segment]:
        """The segment table of ``path`` (any format ffmpeg reads), in seconds. The 16-kHz
        copy goes into a temporary folder inside ``tmp_parent`` (a stage folder, whose next run
        removes what a killed one left) or the system's."""
        with (
            temp_dir(tmp_parent) if tmp_parent is not None else tempfile.TemporaryDirectory() as tmp
        ):
            wav = Path(tmp) / "16k.wav"
            run_ffmpeg(
                [
                    "-i",
                    str(path),
                    "-map",
                    "0:a:0",
                    "-ac",
                    "1",
                    "-ar",
                    str(SR),
                    "-c:a",
                    "pcm_s16le",
                    "-f",
                    "wav",
                    str(wav),
                ],
                "ffmpeg could not decode it",
            )
            mspec, loge = features(wav)
        return [
            Segment(lab, start, stop) for lab, start, stop in self.segment_features(mspec, loge)
        ]

    def segment_features(
        self, mspec: np.ndarray, loge: np.ndarray
    ) -> list[tuple[str, float, float]]:
        iss, seg = self._iss, self.segmenter
        if len(loge) == 0:
            return []
        if self.chunk_seconds <= 0 or len(loge) < MIN_FRAMES + 2 * int(
            (self.chunk_seconds + self.margin_seconds) / 0.01
        ):  # short input: inaSpeechSegmenter's own path, its padding of very short files too
            difflen = 0
            if len(loge) < MIN_FRAMES:
                difflen = MIN_FRAMES - len(loge)
                mspec = np.concatenate((mspec, np.ones((difflen, 24)) * np.min(mspec)))
            return seg.segment_feats(mspec, loge, difflen, 0)
        activity = iss._energy_activity(loge, seg.energy_ratio)[::2]
        labels = np.where(activity == 1, "energy", "noEnergy").astype(object)
        chunk, margin = int(self.chunk_seconds / UNIT), int(self.margin_seconds / UNIT)
        labels = self._per_chunk(seg.vad, mspec, labels, chunk, margin)
        if seg.detect_gender:
            labels = self._per_chunk(seg.gender, mspec, labels, chunk, margin)
        return [(lab, s * UNIT, e * UNIT) for lab, s, e in iss._binidx2seglist(labels)]

    def _per_chunk(
        self, dnn: object, mspec: np.ndarray, labels: np.ndarray, chunk: int, margin: int
    ) -> np.ndarray:
        """Run one CNN stage over the 20-ms label track, chunk by chunk with context."""
        iss = self._iss
        out = labels.copy()
        n = len(labels)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            if not np.any(labels[a:b] == dnn.inlabel):  # type: ignore[attr-defined]
                continue
            lo, hi = max(0, a - margin), min(n, b + margin)
            result = dnn(mspec[lo * 2 : hi * 2], iss._binidx2seglist(labels[lo:hi]), 0)  # type: ignore[operator]
            track = np.empty(hi - lo, dtype=object)
            for lab, s, e in result:
                track[s:e] = lab
            out[a:b] = track[a - lo : b - lo]
        return out


def features(wav16k: Path, block_seconds: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Mel spectrogram (n, 24) and log energy (n,) of a 16-kHz mono WAV, block by block:
    identical to inaSpeechSegmenter's whole-file features."""
    from inaSpeechSegmenter.sidekit_mfcc import mfcc

    block = int(block_seconds * SR) // (2 * HOP) * (2 * HOP)
    mspecs, loges = [], []
    with sf.SoundFile(str(wav16k)) as fh, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="divide by zero encountered in log")
        total = fh.frames
        for start in range(0, total, block):
            fh.seek(start)
            sig = fh.read(min(block + WIN - HOP, total - start), dtype="float32")
            if len(sig) < WIN:
                break
            _, loge, _, mspec = mfcc(sig, get_mspec=True)
            if start + block < total:
                mspec, loge = mspec[: block // HOP], loge[: block // HOP]
            mspecs.append(mspec)
            loges.append(loge)
    if not loges:
        return np.zeros((0, 24)), np.zeros(0)
    return np.concatenate(mspecs), np.concatenate(loges)
