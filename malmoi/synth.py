"""Deterministic synthetic signals shared by the runtime: the music bed of the demo media
(:mod:`ingest.synthetic`) and of the speaker filter's enrollment crops
(:mod:`speaker_filter.audio`). Imports nothing but numpy, so any package can use it."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 44100  # music_bed's rate


def music_bed(n: int) -> np.ndarray:
    """A deterministic music bed: a four-chord progression with plucked notes and a beat."""
    sr = SAMPLE_RATE
    t = np.arange(n) / sr
    out = np.zeros(n, dtype=np.float64)
    chords = [
        (220.0, 277.18, 329.63),
        (196.0, 246.94, 293.66),
        (174.61, 220.0, 261.63),
        (196.0, 246.94, 311.13),
    ]
    beat = 0.5  # seconds, 120 bpm
    for k, start in enumerate(np.arange(0, n / sr, beat)):
        i0, i1 = int(start * sr), min(n, int((start + beat * 2) * sr))
        seg = t[i0:i1] - start
        env = np.exp(-seg * 3.0)
        chord = chords[(k // 8) % len(chords)]
        note = chord[k % 3] * (2 if k % 4 == 3 else 1)
        out[i0:i1] += env * sum(np.sin(2 * np.pi * note * h * seg) / h for h in (1, 2, 3))
        pad = sum(np.sin(2 * np.pi * f * seg) for f in chord) * 0.15
        out[i0:i1] += pad
        kick_len = min(i1 - i0, int(0.12 * sr))
        ks = seg[:kick_len]
        out[i0 : i0 + kick_len] += (
            0.8 * np.sin(2 * np.pi * (50 + 80 * np.exp(-ks * 30)) * ks) * np.exp(-ks * 25)
        )
    return (out / np.max(np.abs(out)) * 0.5).astype(np.float32)
