"""Loudness (ITU-R BS.1770 via pyloudnorm), true peak, and level normalisation with a
true-peak ceiling (a gain only: no clipping, no limiter)."""

from __future__ import annotations

import math

import numpy as np

from malmoi.config import NormalizeConfig
from malmoi.logs import get_logger

log = get_logger(__name__)

BLOCK_SECONDS = 0.4  # pyloudnorm's gating block: shorter audio has no loudness
OVERSAMPLE = 4  # true peak: the peak of the signal resampled to 4x (BS.1770 annex 2)
CEILING_MARGIN_DB = 0.01  # kept below the ceiling so float32 rounding never crosses it


def _frames(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS of ``audio`` ((frames,) or (frames, channels)); -inf for
    silence or audio shorter than pyloudnorm's 400-ms block."""
    import pyloudnorm

    x = _frames(audio)
    if x.shape[0] <= BLOCK_SECONDS * sample_rate or not np.any(x):
        return -math.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(pyloudnorm.Meter(sample_rate).integrated_loudness(x))
    return value if math.isfinite(value) else -math.inf


def true_peak_db(audio: np.ndarray, sample_rate: int) -> float:
    """True peak in dBTP: the largest magnitude of ``audio`` resampled to 4x its rate
    (``scipy.signal.resample_poly``), and never below the sample peak; -inf for silence."""
    from scipy.signal import resample_poly

    x = _frames(audio)
    if x.size == 0:
        return -math.inf
    peak = float(np.max(np.abs(x)))
    if x.shape[0] > 1:
        peak = max(peak, float(np.max(np.abs(resample_poly(x, OVERSAMPLE, 1, axis=0)))))
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def normalize(
    audio: np.ndarray, sample_rate: int, cfg: NormalizeConfig
) -> tuple[np.ndarray, float]:
    """``audio`` scaled to ``cfg.target_lufs`` (mode loudness) or to a sample peak of
    ``cfg.peak_db`` (mode peak), with the gain reduced so that the true peak stays at or below
    ``cfg.ceiling_db``; returns (float32 audio, gain in dB). Mode off, silence, and audio too
    short for a loudness (under 400 ms) come back as they are with gain 0."""
    x = np.asarray(audio)
    if cfg.mode == "off":
        return x.astype(np.float32, copy=False), 0.0
    if cfg.mode == "loudness":
        loudness = integrated_loudness(x, sample_rate)
        if not math.isfinite(loudness):
            return x.astype(np.float32, copy=False), 0.0
        gain = cfg.target_lufs - loudness
    else:
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak == 0:
            return x.astype(np.float32, copy=False), 0.0
        gain = cfg.peak_db - 20 * math.log10(peak)
    true_peak = true_peak_db(x, sample_rate)
    if true_peak + gain > cfg.ceiling_db - CEILING_MARGIN_DB:
        log.debug("normalize: gain %.2f dB limited by the %.1f dBTP ceiling", gain, cfg.ceiling_db)
        gain = cfg.ceiling_db - CEILING_MARGIN_DB - true_peak
    out = (x.astype(np.float64) * 10 ** (gain / 20)).astype(np.float32)
    return out, gain
