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

:class:`PatchGender` (``gender_engine: ina-slice``) runs the same gender CNN on a few patches
per slice instead of every 20 ms of speech: the patches inaSpeechSegmenter would build for the
20-ms units chosen by :func:`patch_units`, from the file's features already computed.
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
PATCH_UNITS = MIN_FRAMES // 2  # 20-ms units one patch spans (0.68 s)
LEAD = MIN_FRAMES // 4  # unit j's patch starts LEAD units before j (inaSpeechSegmenter's lfill)


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
        return self.segments(*self.file_features(path, tmp_parent))

    def segments(self, mspec: np.ndarray, loge: np.ndarray) -> list[Segment]:
        """The segment table (seconds) of features made by :meth:`file_features`."""
        return [
            Segment(lab, start, stop) for lab, start, stop in self.segment_features(mspec, loge)
        ]

    def file_features(
        self, path: Path, tmp_parent: Path | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mel spectrogram and log energy (10-ms frames) of ``path`` decoded to 16-kHz mono
        (see :meth:`segment_file` for the temporary copy)."""
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
            return features(wav)

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


PATCHES = 10  # gender patches per slice at most (ina-slice); eval/gender.py measured the choice
MIN_SPEECH_SECONDS = 0.25  # a slice with less speech (20-ms units labelled speech): no gender
GENDER_LABELS = ("female", "male")  # the gender CNN's outputs (inaSpeechSegmenter's Gender)


def speech_track(segments: list[Segment], n_units: int) -> np.ndarray:
    """Which 20-ms units the segment table labels ``speech`` (or ``male``/``female``)."""
    track = np.zeros(n_units, dtype=bool)
    for s in segments:
        if s.label in ("speech", "male", "female"):
            track[round(s.start / UNIT) : round(s.stop / UNIT)] = True
    return track


def slice_speech(track: np.ndarray, start: float, stop: float) -> np.ndarray:
    """The 20-ms units of speech (indices into ``track``) between ``start`` and ``stop`` s."""
    a = max(0, round(start / UNIT))
    return np.flatnonzero(track[a : max(a, round(stop / UNIT))]) + a


def patch_units(speech: np.ndarray, patches: int) -> np.ndarray:
    """The units to centre the gender patches of a slice on: ``speech`` (its speech units,
    sorted) cut into k equal shares, one patch in the middle of each, with k = ``patches`` or
    fewer so that patches need not overlap (as many as fit side by side, at least one: speech
    shorter than one patch gets one, in its middle). Empty without speech."""
    m = len(speech)
    if m == 0 or patches < 1:
        return np.zeros(0, dtype=np.int64)
    k = min(patches, -(-m // PATCH_UNITS))
    return np.asarray(speech)[((np.arange(k) + 0.5) * m / k).astype(np.int64)]


def _padded(mspec: np.ndarray) -> np.ndarray:
    """``mspec`` padded to one patch with its minimum, as ``_media2feats`` pads short files."""
    if len(mspec) >= MIN_FRAMES:
        return mspec
    pad = np.ones((MIN_FRAMES - len(mspec), mspec.shape[1])) * np.min(mspec)
    return np.concatenate((mspec, pad))


def _first_frames(mspec: np.ndarray, units: np.ndarray) -> np.ndarray:
    """The first frame of each unit's patch in (padded) ``mspec``."""
    windows = (len(mspec) - MIN_FRAMES) // 2 + 1
    return np.clip(np.asarray(units, dtype=np.int64) - LEAD, 0, windows - 1) * 2


def finite_units(mspec: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Whether the patch of each unit (:func:`patches_at`) has no infinite or NaN frame: the
    log mel spectrogram of digital silence is -inf, and inaSpeechSegmenter scores such patches
    0.5 (no opinion). Cheap: no patch is built."""
    mspec = _padded(mspec)
    bad = np.concatenate([[0], np.cumsum(~np.all(np.isfinite(mspec), axis=1))])
    first = _first_frames(mspec, units)
    return bad[first + MIN_FRAMES] == bad[first]


def patches_at(mspec: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """inaSpeechSegmenter's gender-CNN input for the 20-ms ``units`` of the file whose mel
    spectrogram is ``mspec``: for each, the patch ``DnnSegmenter`` builds for that unit
    (``_get_patches(mspec, 68, 2)``: the 68 frames from 2 × (unit - 17), clamped to the file,
    each patch standardised over its 68 × 24 values; a file shorter than a patch padded with its
    minimum as ``_media2feats`` pads it). (n, 68, 24) and whether each patch is finite."""
    mspec = _padded(mspec)
    first = _first_frames(mspec, units)
    if len(first) == 0:
        return np.zeros((0, MIN_FRAMES, mspec.shape[1]), mspec.dtype), np.zeros(0, dtype=bool)
    data = np.stack([mspec[f : f + MIN_FRAMES] for f in first]).reshape(len(first), -1)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="invalid value encountered", category=RuntimeWarning
        )
        data = (data - np.mean(data, axis=1)[:, None]) / np.std(data, axis=1)[:, None]
    finite = np.all(np.isfinite(data), axis=1)
    return data.reshape(len(first), MIN_FRAMES, mspec.shape[1]), finite


class PatchGender:
    """inaSpeechSegmenter's gender CNN (the keras model of the store's ``ina:gender``) on a few
    patches per slice: a slice's label is the higher of its patches' mean probabilities
    (female, male), its score that mean. Loaded once."""

    def __init__(
        self,
        model: Path,
        patches: int = PATCHES,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
        batch_size: int = 256,
    ):
        from tensorflow import keras

        self.nn = keras.models.load_model(str(model), compile=False)
        self.patches = patches
        self.min_speech_seconds = min_speech_seconds
        self.batch_size = batch_size
        self.patches_run = 0  # patches through the CNN so far

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        """(n, 2) probabilities (female, male) of patches made by :func:`patches_at`."""
        if len(patches) == 0:
            return np.zeros((0, 2), np.float32)
        out = []
        for a in range(0, len(patches), self.batch_size):
            batch = np.expand_dims(patches[a : a + self.batch_size], 3).astype(np.float32)
            out.append(np.asarray(self.nn(batch, training=False)))
        return np.concatenate(out)

    def tell(
        self, mspec: np.ndarray, speech: list[np.ndarray]
    ) -> list[tuple[str | None, float | None]]:
        """(label, probability of it) of each slice from its speech units (see
        :func:`slice_speech`): :func:`decide` on its :meth:`patch_probabilities`."""
        return [decide(p) for p in self.patch_probabilities(mspec, speech)]

    def patch_probabilities(self, mspec: np.ndarray, speech: list[np.ndarray]) -> list[np.ndarray]:
        """Per slice, given by its speech units, the (k, 2) probabilities (female, male) of its
        patches: k = 0 for a slice with under ``min_speech_seconds`` of speech or none whose
        patch is finite, else the ``patches`` (or fewer) of :func:`patch_units` spread over the
        speech units whose patch is finite (:func:`finite_units`: not touching digital
        silence). One batch of patches for all the slices."""
        min_units = self.min_speech_seconds / UNIT - 1e-9
        units = [
            patch_units(s[finite_units(mspec, s)], self.patches)
            if len(s) >= min_units
            else np.zeros(0, np.int64)
            for s in speech
        ]
        patches, finite = patches_at(mspec, np.concatenate([np.zeros(0, np.int64), *units]))
        probs = self.probabilities(patches)
        self.patches_run += len(patches)
        out, at = [], 0
        for u in units:
            p, ok = probs[at : at + len(u)], finite[at : at + len(u)]
            out.append(p[ok])
            at += len(u)
        return out


def decide(probs: np.ndarray) -> tuple[str | None, float | None]:
    """A slice's (label, probability of it) from its patches' (k, 2) probabilities (female,
    male): the label of the higher mean; (None, None) without patches."""
    if len(probs) == 0:
        return None, None
    mean = probs.mean(axis=0)
    k = int(np.argmax(mean))
    return GENDER_LABELS[k], float(mean[k])
