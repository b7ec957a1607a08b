"""The seed's own recipe as the baseline engine (``engine: pydub``): pydub's one-pole low-pass
applied ``passes`` times, then pydub's peak normalisation, on 16-bit PCM as pydub works."""

from __future__ import annotations

import numpy as np

from malmoi.logs import get_logger

log = get_logger(__name__)

PCM_SCALE = 32768.0  # 16-bit full scale, as pydub counts it (max_possible_amplitude)


def to_segment(audio: np.ndarray, sample_rate: int):  # -> pydub.AudioSegment
    """A 16-bit PCM ``AudioSegment`` of float ``audio`` shaped (frames, channels); samples
    beyond full scale are clipped, as writing a 16-bit WAV would."""
    from pydub import AudioSegment

    frames = np.asarray(audio, dtype=np.float64)
    if frames.ndim != 2 or frames.shape[1] < 1:
        raise ValueError(f"audio must be shaped (frames, channels), not {frames.shape}")
    pcm = np.clip(np.round(frames * PCM_SCALE), -32768, 32767).astype("<i2")
    return AudioSegment(
        data=pcm.tobytes(), sample_width=2, frame_rate=int(sample_rate), channels=frames.shape[1]
    )


def from_segment(segment) -> np.ndarray:
    """The samples of a 16-bit ``AudioSegment`` as float32 (frames, channels) in [-1, 1)."""
    pcm = np.frombuffer(segment.raw_data, dtype="<i2").reshape(-1, segment.channels)
    return (pcm / PCM_SCALE).astype(np.float32)


def pydub_recipe(
    audio: np.ndarray,
    sample_rate: int,
    cutoff_hz: float = 5000.0,
    passes: int = 2,
    headroom_db: float = 0.1,
) -> np.ndarray:
    """``pydub.effects.low_pass_filter(segment, cutoff_hz)`` applied ``passes`` times, then
    ``pydub.effects.normalize(segment, headroom_db)`` — the library calls the seed used, on a
    16-bit PCM segment built from ``audio`` ((frames, channels) float). Returns float32 at the
    same rate and channels. The filter is pydub's causal 1-pole RC (about 6 dB/octave per pass)."""
    from pydub import effects

    segment = to_segment(audio, sample_rate)
    for _ in range(passes):
        segment = effects.low_pass_filter(segment, cutoff_hz)
    segment = effects.normalize(segment, headroom=headroom_db)
    return from_segment(segment)
