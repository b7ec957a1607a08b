"""The denoise chain on files of any length, with memory bounded by one block.

Slices (seconds to a minute) are filtered in memory; a whole episode handed to ``malmoi
denoise`` is streamed: the filters through :func:`denoise.filters.filter_file` (blocks with
enough overlap to equal whole-file filtering), the loudness measured block by block exactly as
ITU-R BS.1770 / pyloudnorm does on the whole signal (K-weighting with carried filter state,
400-ms gating blocks every 100 ms), the true peak by 4× oversampling per block, and the gain
applied block by block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from malmoi.audio import sound_file
from malmoi.config import NormalizeConfig
from malmoi.files import atomic_path

CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770 (pyloudnorm's order: L R C Ls Rs)


def _blocks(path: Path, frames: int) -> Iterator[np.ndarray]:
    with sf.SoundFile(str(path)) as fh:
        while True:
            block = fh.read(frames, dtype="float64", always_2d=True)
            if not len(block):
                return
            yield block


def integrated_loudness_file(path: Path, block_seconds: float = 60.0) -> float:
    """Integrated loudness (LUFS) of a file, read in blocks; equal to pyloudnorm's
    ``Meter(rate).integrated_loudness`` on the whole signal (to rounding)."""
    import pyloudnorm
    from scipy.signal import lfilter, lfilter_zi

    info = sf.info(str(path))
    rate, channels = info.samplerate, info.channels
    meter = pyloudnorm.Meter(rate)
    stages = list(meter._filters.values())  # K-weighting: high shelf, then high pass
    state = [
        [lfilter_zi(s.b, s.a) * 0.0 for _ in range(channels)] for s in stages
    ]  # zero initial state, as lfilter on the whole signal
    step = 0.1  # s: gating blocks of 400 ms every 100 ms
    bounds_done = 0  # index k of the next step boundary b_k = int(step * k * rate)
    sums: list[np.ndarray] = []  # per-step sums of squares, one value per channel
    pending = np.zeros((0, channels))
    position = 0  # samples consumed into ``pending``'s start
    for block in _blocks(path, max(1, int(block_seconds * rate))):
        weighted = block.copy()
        for i, s in enumerate(stages):
            for ch in range(channels):
                weighted[:, ch], state[i][ch] = lfilter(s.b, s.a, weighted[:, ch], zi=state[i][ch])
                weighted[:, ch] *= s.passband_gain
        pending = np.concatenate([pending, weighted])
        while True:
            start = int(step * bounds_done * rate) - position
            end = int(step * (bounds_done + 1) * rate) - position
            if end > len(pending):
                break
            sums.append(np.sum(np.square(pending[start:end]), axis=0))
            bounds_done += 1
        cut = int(step * bounds_done * rate) - position
        pending = pending[cut:]
        position += cut
    total = info.frames / rate
    n_blocks = int(np.round((total - 0.4) / (0.4 * 0.25))) + 1
    if total < 0.4 or n_blocks < 1 or len(sums) < 4:
        return -math.inf
    steps = np.array(sums)  # (n_steps, channels)
    n_blocks = min(n_blocks, len(steps) - 3)
    z = (
        steps[:n_blocks]
        + steps[1 : n_blocks + 1]
        + steps[2 : n_blocks + 2]
        + steps[3 : n_blocks + 3]
    )
    z = z / (0.4 * rate)  # (blocks, channels) mean squares
    gains = np.array(CHANNEL_GAINS[:channels])
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(z @ gains)
    gated = loud >= -70.0
    if not gated.any():
        return -math.inf
    relative = -0.691 + 10 * np.log10(z[gated].mean(axis=0) @ gains) - 10.0
    final = (loud > relative) & (loud > -70.0)
    if not final.any():
        return -math.inf
    return float(-0.691 + 10 * np.log10(z[final].mean(axis=0) @ gains))


def true_peak_file(path: Path, block_seconds: float = 60.0) -> float:
    """True peak (dBTP) of a file: the maximum of each block's 4× oversampled peak."""
    from denoise.loudness import true_peak_db

    info = sf.info(str(path))
    peak = -math.inf
    for block in _blocks(path, max(1, int(block_seconds * info.samplerate))):
        peak = max(peak, true_peak_db(block, info.samplerate))
    return peak


def gain_for(loudness: float, peak_db: float, sample_peak_db: float, cfg: NormalizeConfig) -> float:
    """The normalisation gain (dB) for measured levels: to the target, limited by the true-peak
    ceiling; 0 for silence or mode 'off'."""
    if cfg.mode == "off":
        return 0.0
    if cfg.mode == "loudness":
        if not math.isfinite(loudness):
            return 0.0
        gain = cfg.target_lufs - loudness
    else:
        if not math.isfinite(sample_peak_db):
            return 0.0
        gain = cfg.peak_db - sample_peak_db
    if math.isfinite(peak_db):
        gain = min(gain, cfg.ceiling_db - peak_db)
    return gain


def sample_peak_file(path: Path, block_seconds: float = 60.0) -> float:
    info = sf.info(str(path))
    peak = 0.0
    for block in _blocks(path, max(1, int(block_seconds * info.samplerate))):
        peak = max(peak, float(np.max(np.abs(block))) if len(block) else 0.0)
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def apply_gain_file(src: Path, dest: Path, gain_db: float, block_seconds: float = 60.0) -> None:
    """Write ``src`` times the gain to ``dest`` (float WAV, atomically), block by block."""
    info = sf.info(str(src))
    factor = 10 ** (gain_db / 20)
    with (
        atomic_path(dest) as tmp,
        sound_file(
            tmp,
            "w",
            samplerate=info.samplerate,
            channels=info.channels,
            subtype="FLOAT",
            format="WAV",
        ) as out,
    ):
        for block in _blocks(src, max(1, int(block_seconds * info.samplerate))):
            out.write((block * factor).astype(np.float32))


def normalize_file(
    src: Path, dest: Path, cfg: NormalizeConfig, block_seconds: float = 60.0
) -> float:
    """Normalise a file of any length like :func:`denoise.loudness.normalize` does an array;
    the gain applied in dB."""
    loudness = integrated_loudness_file(src, block_seconds) if cfg.mode == "loudness" else 0.0
    sample_peak = sample_peak_file(src, block_seconds) if cfg.mode == "peak" else 0.0
    gain = gain_for(loudness, true_peak_file(src, block_seconds), sample_peak, cfg)
    apply_gain_file(src, dest, gain, block_seconds)
    return gain
