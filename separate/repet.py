"""REPET-SIM: separate the repeating background from the voice with a nearest-neighbour
filter over the magnitude spectrogram (Rafii & Pardo 2012; librosa's ``nn_filter``).

No weights: the baseline for machines without the Spleeter model. Frames that resemble many
others (music loops, steady noise) are the background; what the nearest neighbours' median does
not explain is the voice. The vocals come from a soft mask; the accompaniment is the rest, so the
two stems add back up to the input.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from separate.base import Engine
from separate.chunking import process_in_chunks

N_FFT = 2048
HOP = 512


class RepetEngine(Engine):
    """REPET-SIM over overlapping chunks (the similarity search is quadratic in frames)."""

    name: ClassVar[str] = "repet"

    def __init__(
        self,
        chunk_seconds: float = 30.0,
        overlap_seconds: float = 2.0,
        min_gap_seconds: float = 2.0,
        margin: float = 2.0,
    ):
        self.chunk_seconds = chunk_seconds
        self.overlap_seconds = overlap_seconds
        self.min_gap_seconds = min_gap_seconds  # neighbours closer in time do not count
        self.margin = margin  # > 1 keeps less in the vocals, removing more background

    def separate_file(self, in_wav: Path, vocals: Path, accompaniment: Path) -> None:
        import soundfile as sf

        sr = sf.info(str(in_wav)).samplerate
        process_in_chunks(
            in_wav,
            {"vocals": vocals, "accompaniment": accompaniment},
            lambda block: self.separate_block(block, sr),
            self.chunk_seconds,
            self.overlap_seconds,
        )

    def separate_block(self, block: np.ndarray, sr: int) -> dict[str, np.ndarray]:
        """``block``: (samples, channels) float32 → vocals and accompaniment, same shape."""
        import librosa

        n = len(block)
        if n < N_FFT:
            return {"vocals": np.zeros_like(block), "accompaniment": block.copy()}
        specs = [
            librosa.stft(block[:, c], n_fft=N_FFT, hop_length=HOP) for c in range(block.shape[1])
        ]
        mags = [np.abs(s) for s in specs]
        mono = np.mean(mags, axis=0)
        width = max(1, int(librosa.time_to_frames(self.min_gap_seconds, sr=sr, hop_length=HOP)))
        frames = mono.shape[1]
        if frames <= 2 * width + 1:
            return {"vocals": np.zeros_like(block), "accompaniment": block.copy()}
        rec = librosa.segment.recurrence_matrix(
            mono, mode="affinity", metric="cosine", width=width, sparse=True
        )
        vocals = np.zeros_like(block)
        for c, (spec, mag) in enumerate(zip(specs, mags, strict=True)):
            background = np.minimum(
                mag, librosa.decompose.nn_filter(mag, rec=rec, aggregate=np.median)
            )
            mask = librosa.util.softmask(mag - background, self.margin * background, power=2)
            vocals[:, c] = librosa.istft(mask * spec, hop_length=HOP, n_fft=N_FFT, length=n)
        return {"vocals": vocals, "accompaniment": block - vocals}
