"""Noise makers for the denoise evaluation: crackle, whine, hum, broadband and MUSAN noise,
deterministic for a seed; mixing at an exact SNR and the scores (SI-SDR, SNR) are
:mod:`eval.common`'s, re-exported here: ``mix_at_snr``, ``si_sdr``, ``snr``.

Every maker returns a float32 (n,) array at an RMS of ``LEVEL`` (its absolute level does not
matter: ``mix_at_snr`` sets it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from eval.common import mix_at_snr, si_sdr, snr
from eval.separation import NOISE
from malmoi.audio import read_audio
from malmoi.logs import get_logger

log = get_logger(__name__)

__all__ = [
    "broadband",
    "crackle",
    "hum",
    "mix_at_snr",
    "musan_noise",
    "si_sdr",
    "snr",
    "whine",
]

LEVEL = 0.1  # RMS of every noise made here (-20 dBFS)
CRACKLE_HIGHPASS_HZ = 3000.0


def _at_level(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to an RMS of ``LEVEL``, as float32 (silence stays silence)."""
    x = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    return (x * (LEVEL / rms) if rms > 0 else x).astype(np.float32)


def _below_nyquist(freq_hz: float, sample_rate: int, what: str) -> None:
    if not 0 < freq_hz < sample_rate / 2:
        raise ValueError(f"{what} at {freq_hz} Hz is not below Nyquist ({sample_rate / 2} Hz)")


def crackle(n: int, sample_rate: int, rate_per_s: float = 200, seed: int = 0) -> np.ndarray:
    """Impulsive high-frequency noise, the vinyl/radio crackle ("치지직"): clicks at random
    times (Poisson, ``rate_per_s`` a second), each a sub-millisecond decaying burst of random
    sign and a log-uniform amplitude over 30 dB, high-passed above 3 kHz."""
    from scipy.signal import butter, sosfiltfilt

    _below_nyquist(CRACKLE_HIGHPASS_HZ, sample_rate, "crackle's high-pass")
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    count = rng.poisson(rate_per_s * n / sample_rate)
    if n == 0 or count == 0:
        return x.astype(np.float32)
    starts = rng.integers(0, n, count)
    amps = 10 ** rng.uniform(-1.5, 0, count) * rng.choice([-1.0, 1.0], count)
    length = max(2, int(0.0005 * sample_rate))  # 0.5 ms
    tau = rng.uniform(0.00003, 0.0002, count) * sample_rate  # decay: 30-200 µs
    t = np.arange(length)
    for s, a, k in zip(starts, amps, tau, strict=True):
        seg = x[s : s + length]
        seg += a * np.exp(-t[: len(seg)] / k) * rng.standard_normal(len(seg))
    sos = butter(8, CRACKLE_HIGHPASS_HZ, btype="highpass", fs=sample_rate, output="sos")
    return _at_level(sosfiltfilt(sos, x))


def whine(n: int, sample_rate: int, freq_hz: float = 6000.0) -> np.ndarray:
    """A steady tone at ``freq_hz`` (an electronic whine, e.g. 6 kHz)."""
    _below_nyquist(freq_hz, sample_rate, "whine")
    return _at_level(np.sin(2 * np.pi * freq_hz * np.arange(n) / sample_rate))


def hum(n: int, sample_rate: int, freq_hz: float = 60.0, harmonics: int = 4) -> np.ndarray:
    """Mains hum: ``freq_hz`` and its multiples up to ``harmonics``·``freq_hz`` (the k-th with
    amplitude 1/k), the multiples at or above Nyquist left out."""
    _below_nyquist(freq_hz, sample_rate, "hum")
    t = np.arange(n) / sample_rate
    x = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * freq_hz < sample_rate / 2:
            x += np.sin(2 * np.pi * k * freq_hz * t) / k
    return _at_level(x)


def broadband(
    n: int, sample_rate: int, seed: int = 0, color: Literal["white", "pink"] = "white"
) -> np.ndarray:
    """Gaussian noise, white (flat) or pink (power falling 3 dB per octave, no DC)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    if color == "pink":
        spec = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(n, 1 / sample_rate)
        shape = np.zeros_like(freqs)
        shape[1:] = 1 / np.sqrt(freqs[1:])
        x = np.fft.irfft(spec * shape, n)
    elif color != "white":
        raise ValueError(f"color must be 'white' or 'pink', not {color!r}")
    return _at_level(x)


def musan_noise(shared: Path, n: int, sample_rate: int) -> np.ndarray:
    """MUSAN noise: ``data/ina/musanmix.wav`` from 29.08 to 52.80 s (noise only) of ``shared``,
    at ``sample_rate``, looped or cut to ``n`` samples."""
    full = read_audio(shared / "data/ina/musanmix.wav", sample_rate)
    start, stop = NOISE
    part = full[int(start * sample_rate) : int(stop * sample_rate)]
    return _at_level(np.resize(part, n))
