"""The denoise stage's elements: the seed's pydub recipe (baseline engine), RNNoise and spectral
gating, and the evaluation's noise makers."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.stats import kurtosis

from denoise.learned import RNNoise, spectral_gate
from denoise.pydub_engine import pydub_recipe
from eval.noises import (
    broadband,
    crackle,
    hum,
    mix_at_snr,
    musan_noise,
    si_sdr,
    snr,
    whine,
)
from malmoi.audio import read_audio
from malmoi.config import GateConfig

SR = 44100


@functools.cache
def _speech(shared: Path, sample_rate: int, seconds: float) -> np.ndarray:
    """LibriSpeech utterances from ../shared with 0.3-s pauses, mono float32 at ``sample_rate``."""
    files = sorted((shared / "data/librispeech/speakers").glob("*.flac"))
    assert files, f"no LibriSpeech files in {shared}"
    parts, total = [], 0
    for f in files:
        clip = read_audio(f, sample_rate)
        parts += [clip, np.zeros(int(0.3 * sample_rate), np.float32)]
        total += len(clip)
        if total >= seconds * sample_rate:
            break
    return np.concatenate(parts)[: int(seconds * sample_rate)]


def _level_db(x: np.ndarray, sample_rate: int, freq: float) -> float:
    """Level (dB) of the spectral line at ``freq`` of a signal holding whole periods of it."""
    spec = np.abs(np.fft.rfft(x)) / len(x)
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    return float(20 * np.log10(spec[np.argmin(np.abs(freqs - freq))] + 1e-20))


def _tones(sample_rate: int, seconds: float, *freqs: float) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs)


# --- the seed's pydub recipe ----------------------------------------------------------------


def test_pydub_recipe_is_pydubs_own_output(shared: Path, tmp_path: Path) -> None:
    """The same samples as pydub's calls on a 16-bit WAV file read by pydub itself (stereo)."""
    from pydub import AudioSegment, effects

    speech = _speech(shared, SR, 3.0)
    stereo = np.stack([speech, 0.5 * speech[::-1]], axis=1) + 0.05 * np.stack(
        [crackle(len(speech), SR, seed=1), crackle(len(speech), SR, seed=2)], axis=1
    )
    wav = tmp_path / "in.wav"
    sf.write(wav, stereo, SR, subtype="PCM_16")
    segment = AudioSegment.from_wav(wav)
    for _ in range(3):
        segment = effects.low_pass_filter(segment, 4000)
    segment = effects.normalize(segment, headroom=0.5)
    expected = np.array(segment.get_array_of_samples(), dtype=np.float64).reshape(-1, 2) / 32768

    audio, rate = sf.read(wav, dtype="float64", always_2d=True)
    ours = pydub_recipe(audio, rate, cutoff_hz=4000, passes=3, headroom_db=0.5)
    assert ours.dtype == np.float32 and ours.shape == audio.shape
    np.testing.assert_array_equal(ours.astype(np.float64), expected)


def _one_pole_db(freq: float, cutoff: float, sample_rate: int) -> float:
    """|H| in dB of pydub's RC filter y += a·(x − y), a = dt/(RC + dt)."""
    rc, dt = 1 / (2 * math.pi * cutoff), 1 / sample_rate
    a = dt / (rc + dt)
    w = 2 * math.pi * freq / sample_rate
    return 20 * math.log10(abs(a / (1 - (1 - a) * complex(math.cos(w), -math.sin(w)))))


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_pydub_recipe_attenuates_8k_about_6_db_per_pass(passes: int) -> None:
    """8 kHz against 1 kHz (normalisation cannot change the ratio): a 1-pole RC per pass,
    ~6.6 dB at 44.1 kHz with a 5 kHz cutoff — nowhere near the issue's 36 dB."""
    x = _tones(SR, 1.0, 1000, 8000)[:, None]
    y = pydub_recipe(x, SR, cutoff_hz=5000, passes=passes)[:, 0].astype(np.float64)
    before = _level_db(x[:, 0], SR, 8000) - _level_db(x[:, 0], SR, 1000)
    after = _level_db(y, SR, 8000) - _level_db(y, SR, 1000)
    expected = passes * (_one_pole_db(8000, 5000, SR) - _one_pole_db(1000, 5000, SR))
    assert before - after == pytest.approx(-expected, abs=0.2)
    assert 6.0 * passes < before - after < 7.5 * passes


@pytest.mark.parametrize("headroom", [0.1, 1.0, 6.0])
def test_pydub_recipe_peak_at_minus_headroom(shared: Path, headroom: float) -> None:
    speech = 0.3 * _speech(shared, SR, 2.0)[:, None]
    y = pydub_recipe(speech, SR, headroom_db=headroom)
    assert 20 * np.log10(np.abs(y).max()) == pytest.approx(-headroom, abs=0.01)


def test_pydub_segment_rounds_and_clips_like_a_16_bit_wav() -> None:
    """Floats become the nearest 16-bit sample (at most half a step off); beyond full scale
    they clip (never wrap around), as writing a 16-bit WAV does."""
    from denoise.pydub_engine import from_segment, to_segment

    rng = np.random.default_rng(0)
    x = rng.uniform(-0.9, 0.9, (1000, 2))
    back = from_segment(to_segment(x, 8000)).astype(np.float64)
    assert np.abs(back - x).max() <= 0.5 / 32768 + 1e-12
    loud = np.array([[1.5, -1.5], [1.0, -1.0]])
    np.testing.assert_array_equal(from_segment(to_segment(loud, 8000)), [[32767 / 32768, -1.0]] * 2)


# --- RNNoise and spectral gating -------------------------------------------------------------


@pytest.fixture(scope="module")
def rnnoise() -> RNNoise:
    return RNNoise()


@pytest.mark.parametrize("rate", [16000, 22050, 44100])
def test_rnnoise_improves_speech_in_white_noise_at_any_rate(
    shared: Path, rnnoise: RNNoise, rate: int
) -> None:
    """0 dB white noise: measured +8 to +10 dB SNR and SI-SDR (needs the 20-ms lag removed)."""
    clean = _speech(shared, rate, 4.0)
    noisy = mix_at_snr(clean, broadband(len(clean), rate, seed=3), 0.0)
    out = rnnoise(noisy[:, None], rate)
    assert out.shape == (len(clean), 1) and out.dtype == np.float32
    den = out[:, 0]
    assert snr(den, clean) - snr(noisy, clean) >= 6.0, (snr(noisy, clean), snr(den, clean))
    assert si_sdr(den, clean) - si_sdr(noisy, clean) >= 6.0


def test_rnnoise_keeps_shape_and_channels_apart(shared: Path, rnnoise: RNNoise) -> None:
    """Odd lengths (also shorter than a frame) come back exactly; each channel of a stereo
    input is denoised as it would be alone."""
    rate = 22050
    for n in (1, 100, 12345):
        assert rnnoise(np.zeros((n, 2), np.float64), rate).shape == (n, 2)
    assert rnnoise(np.zeros((0, 1)), rate).shape == (0, 1)
    clean = _speech(shared, rate, 2.0)
    left = mix_at_snr(clean, broadband(len(clean), rate, seed=4), 5.0)
    right = mix_at_snr(clean[::-1].copy(), broadband(len(clean), rate, seed=5, color="pink"), 5.0)
    both = rnnoise(np.stack([left, right], axis=1), rate)
    np.testing.assert_array_equal(both[:, 1], rnnoise(right[:, None], rate)[:, 0])
    np.testing.assert_array_equal(both[:, 0], rnnoise(left[:, None], rate)[:, 0])


def test_rnnoise_model_created_once_per_instance(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """States are made once per channel per instance and reset between calls: the same input
    gives the same output on every call."""
    from pyrnnoise import rnnoise as lib

    made: list[int] = []
    real_create = lib.create

    def counting_create() -> int:
        made.append(1)
        return real_create()

    monkeypatch.setattr(lib, "create", counting_create)
    rate = 16000
    clean = _speech(shared, rate, 1.5)
    noisy = mix_at_snr(clean, broadband(len(clean), rate, seed=6), 5.0)
    stereo = np.stack([noisy, noisy[::-1]], axis=1)
    engine = RNNoise()
    first = engine(stereo, rate)
    second = engine(stereo, rate)
    engine(stereo[:, :1], rate)
    assert len(made) == 2
    np.testing.assert_array_equal(first, second)


def test_spectral_gate_improves_speech_in_white_noise(shared: Path) -> None:
    """0 dB stationary white noise: measured +4.6 dB SNR, +4.9 dB SI-SDR (defaults)."""
    clean = _speech(shared, SR, 4.0)
    noisy = mix_at_snr(clean, broadband(len(clean), SR, seed=7), 0.0)
    stereo = np.stack([noisy, noisy], axis=1)
    out = spectral_gate(stereo, SR, GateConfig())
    assert out.shape == stereo.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    den = out[:, 0]
    assert snr(den, clean) - snr(noisy, clean) >= 3.0, (snr(noisy, clean), snr(den, clean))
    assert si_sdr(den, clean) - si_sdr(noisy, clean) >= 3.0
    weaker = spectral_gate(noisy[:, None], SR, GateConfig(prop_decrease=0.3))[:, 0]
    assert snr(weaker, clean) < snr(den, clean)


# --- noise makers ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", [-5.0, 0.0, 7.5, 20.0])
def test_mix_at_snr_is_exact(shared: Path, level: float) -> None:
    clean = _speech(shared, 16000, 2.0)
    n = len(clean)
    noises = [crackle(n, 16000), whine(n, 16000), hum(n, 16000), broadband(n, 16000)]
    for noise in noises:
        mixed = mix_at_snr(clean, noise, level)
        got = 10 * np.log10(np.mean(clean**2.0) / np.mean((mixed - clean) ** 2.0))
        assert got == pytest.approx(level, abs=0.01)
    stereo = np.stack([clean, 0.5 * clean], axis=1)
    mixed = mix_at_snr(stereo, noises[3], level)
    assert mixed.shape == stereo.shape
    got = 10 * np.log10(np.mean(stereo**2.0) / np.mean((mixed - stereo) ** 2.0))
    assert got == pytest.approx(level, abs=0.01)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_crackle_is_impulsive_and_above_3_khz(rate: int) -> None:
    x = crackle(5 * rate, rate, seed=0)
    assert x.shape == (5 * rate,) and x.dtype == np.float32
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    assert power[freqs >= 3000].sum() / power.sum() >= 0.95
    assert kurtosis(x) > 20  # Gaussian noise: 0
    assert abs(kurtosis(broadband(5 * rate, rate))) < 0.5
    np.testing.assert_array_equal(x, crackle(5 * rate, rate, seed=0))
    assert not np.array_equal(x, crackle(5 * rate, rate, seed=1))


def test_hum_has_its_harmonics_and_whine_its_tone() -> None:
    rate = 8000
    x = hum(rate, rate, freq_hz=60.0, harmonics=4).astype(np.float64)
    levels = [_level_db(x, rate, 60.0 * k) for k in range(1, 6)]
    for k in range(2, 5):  # the k-th multiple at 1/k of the fundamental
        assert levels[k - 1] - levels[0] == pytest.approx(-20 * np.log10(k), abs=0.1)
    assert levels[4] < levels[0] - 60  # no 5th
    assert _level_db(x, rate, 90.0) < levels[0] - 60
    w = whine(rate, 16000, 6000.0).astype(np.float64)
    spec = np.abs(np.fft.rfft(w))
    assert np.fft.rfftfreq(len(w), 1 / 16000)[np.argmax(spec)] == pytest.approx(6000, abs=1)
    with pytest.raises(ValueError, match="Nyquist"):
        whine(100, 8000, 6000.0)


def test_broadband_colors() -> None:
    """White is flat; pink loses about 3 dB per octave."""
    rate = 16000
    for color, slope in (("white", 0.0), ("pink", -3.0)):
        x = broadband(4 * rate, rate, seed=2, color=color)
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / rate)
        band = [power[(freqs >= f) & (freqs < 2 * f)].mean() for f in (500.0, 1000.0, 2000.0)]
        octaves = np.diff(10 * np.log10(band))
        np.testing.assert_allclose(octaves, slope, atol=0.5)
    np.testing.assert_array_equal(broadband(1000, rate, seed=9), broadband(1000, rate, seed=9))


def test_musan_noise_is_the_noise_part_looped(shared: Path) -> None:
    rate = 8000
    n = 30 * rate  # longer than the 23.72-s noise part: looped
    x = musan_noise(shared, n, rate)
    assert x.shape == (n,) and x.dtype == np.float32
    period = int(52.80 * rate) - int(29.08 * rate)
    np.testing.assert_array_equal(x[period : period + 1000], x[:1000])
    full = read_audio(shared / "data/ina/musanmix.wav", rate)
    part = full[int(29.08 * rate) : int(29.08 * rate) + 1000].astype(np.float64)
    assert si_sdr(x[:1000], part) > 60
