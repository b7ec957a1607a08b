"""The audio the speaker filter's enrollment works on: clips loaded as 16-kHz mono, speech mixed
with a random stretch of music at an SNR, and the synthetic music bed (:mod:`malmoi.synth`) at
16 kHz. The research bench (``eval/``) uses the same functions, so its enrollment crops are made
exactly as the stage's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from malmoi.synth import SAMPLE_RATE as MUSIC_RATE
from malmoi.synth import music_bed

SR = 16000


def load(path: Path) -> np.ndarray:
    """Mono float32 samples of ``path`` at 16 kHz (soundfile; librosa resamples)."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if sr != SR:
        import librosa

        wav = librosa.resample(wav, orig_sr=sr, target_sr=SR)
    return wav.astype(np.float32)


def snr_gain(signal: np.ndarray, noise: np.ndarray, snr_db: float, floor: float = 0.0) -> float:
    """The gain that puts ``noise`` ``snr_db`` below ``signal``: 10·log10(P_signal /
    P(gain·noise)) = ``snr_db``, powers as float64 means; ``floor`` is added to the noise's
    power (a guard against silence)."""
    ps = float(np.mean(np.asarray(signal, dtype=np.float64) ** 2))
    pn = float(np.mean(np.asarray(noise, dtype=np.float64) ** 2)) + floor
    return float(np.sqrt(ps / (pn * 10 ** (snr_db / 10))))


def mix(speech: np.ndarray, music: np.ndarray, snr_db: float, rng: np.random.Generator):
    """``speech`` plus a random stretch of ``music`` scaled to ``snr_db`` below it."""
    start = int(rng.integers(0, len(music) - len(speech) + 1))
    m = music[start : start + len(speech)].astype(np.float64)
    gain = snr_gain(speech, m, snr_db, floor=1e-12)
    return (speech + gain * m).astype(np.float32)


def music(n: int) -> np.ndarray:
    """``n`` samples (at least) at 16 kHz of the synthetic music bed."""
    from scipy.signal import resample_poly

    m = music_bed(int(n * MUSIC_RATE / SR) + MUSIC_RATE)
    return resample_poly(m, SR, MUSIC_RATE).astype(np.float32)
