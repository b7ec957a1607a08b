"""The low-pass that keeps bandwidth (issue 20): by default (``lowpass.cutoff_hz: auto``) a
clean wideband slice keeps its energy above 5 kHz, while hiss or crackle that leads the speech
above some frequency is low-passed there; ``--lowpass 5000`` is still the fixed filter. And the
evaluation's bandwidth measure, the log-spectral distance to the clean speech from 4 to 8 kHz."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from denoise.filters import find_lowpass
from eval.denoise import lsd_band
from eval.noises import broadband, crackle, hum, mix_at_snr, whine
from malmoi.config import DenoiseConfig, LowpassConfig
from malmoi.manifest import read_manifest
from tests.conftest import run_malmoi

KOREAN = (
    "안녕하세요. 말모이 시험입니다. 오늘은 날씨가 맑고 바람이 조금 붑니다. "
    "우리는 한국어 음성 데이터를 만들고 있습니다."
)


@pytest.fixture(scope="module")
def korean(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """About 8 s of espeak-ng Korean at 22.05 kHz: wideband (energy up to 11 kHz), clean."""
    wav = tmp_path_factory.mktemp("ko") / "ko.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(wav), KOREAN], check=True)
    x, sr = sf.read(str(wav), dtype="float64")
    return x, sr


def hiss_above(n: int, sr: int, from_hz: float = 5000.0, seed: int = 0) -> np.ndarray:
    """White noise high-passed above ``from_hz`` (hiss the speech's low band does not have)."""
    rng = np.random.default_rng(seed)
    sos = signal.butter(8, from_hz, "highpass", fs=sr, output="sos")
    return signal.sosfiltfilt(sos, rng.standard_normal(n))


def band_db(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    """Energy of ``x`` between ``lo`` and ``hi`` Hz relative to its energy from 300 Hz to
    3 kHz (so that the normalisation's gain does not count), dB."""
    freqs, power = signal.welch(x, sr, nperseg=2048)
    within = power[(freqs >= lo) & (freqs < hi)].sum()
    voice = power[(freqs >= 300) & (freqs < 3000)].sum()
    return float(10 * np.log10(within / voice))


# 1. the rule, on arrays ----------------------------------------------------------------------


def test_find_lowpass_leaves_clean_speech_and_low_noises_alone(
    korean: tuple[np.ndarray, int],
) -> None:
    x, sr = korean
    assert find_lowpass(x, sr) is None
    up = signal.resample_poly(x, 2, 1)  # 44.1 kHz
    assert find_lowpass(up, 2 * sr) is None
    # pauses cut out, as a slice of continuous speech: still nothing to cut
    frames = np.abs(x) > 1e-3
    assert find_lowpass(x[frames], sr) is None
    # hum is below the high band, a whine is one line (the notch's): no low-pass either
    n = len(x)
    assert find_lowpass(mix_at_snr(x, hum(n, sr), 5.0), sr) is None
    assert find_lowpass(mix_at_snr(x, whine(n, sr, 6000.0), 10.0), sr) is None


@pytest.mark.parametrize("snr_db", [10.0, 20.0])
def test_find_lowpass_cuts_where_hiss_or_crackle_leads(
    korean: tuple[np.ndarray, int], snr_db: float
) -> None:
    x, sr = korean
    n = len(x)
    for noise in (hiss_above(n, sr), crackle(n, sr, seed=1), broadband(n, sr, seed=2)):
        cutoff = find_lowpass(mix_at_snr(x, noise, snr_db), sr)
        assert cutoff is not None and 4000 <= cutoff <= 6000, (snr_db, cutoff)
    # the lowest cutoff is configurable
    assert find_lowpass(mix_at_snr(x, broadband(n, sr), 10.0), sr, min_hz=5500.0) == 5500.0


# 2. the stage and the CLI --------------------------------------------------------------------


def test_cutoff_hz_is_auto_by_default_and_takes_numbers() -> None:
    assert DenoiseConfig().lowpass.cutoff_hz == "auto"
    assert LowpassConfig(cutoff_hz="5000").cutoff_hz == 5000.0
    with pytest.raises(ValueError, match="auto or a number"):
        LowpassConfig(cutoff_hz="high")
    with pytest.raises(ValueError, match="above 0 Hz"):
        LowpassConfig(cutoff_hz=0)


def test_default_denoise_keeps_clean_bandwidth_and_lowpasses_hiss(
    korean: tuple[np.ndarray, int], tmp_path: Path
) -> None:
    """``malmoi denoise`` with its defaults: the clean wideband file keeps its 5-10 kHz
    energy within 1 dB (the old default, a fixed 5-kHz low-pass, took 9.5 dB of 5-7 kHz) and its row
    says 'none'; the same speech with hiss above 5 kHz at 20 dB SNR is low-passed at the cutoff
    its row names, and the hiss above 7 kHz drops by more than 40 dB. ``--lowpass 5000`` is the
    fixed filter, on the clean file too."""
    x, sr = korean
    src = tmp_path / "in"
    src.mkdir()
    noisy = mix_at_snr(x, hiss_above(len(x), sr), 20.0)
    up = signal.resample_poly(x, 2, 1)
    sf.write(src / "clean.wav", x.astype(np.float32), sr, subtype="FLOAT")
    sf.write(src / "clean44.wav", up.astype(np.float32), 2 * sr, subtype="FLOAT")
    sf.write(src / "hiss.wav", noisy.astype(np.float32), sr, subtype="FLOAT")
    out = tmp_path / "dn"
    proc = run_malmoi("denoise", str(src), "--out", str(out), "--no-scores")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_manifest(out).set_index("source")
    for name in ("clean.wav", "clean44.wav"):
        row = rows.loc[str(src / name)]
        assert row["chain"] == "notch → lowpass → normalize"
        assert row["lowpass_hz"] == "none", row["lowpass_hz"]
        before, rate = sf.read(str(src / name))
        after, _ = sf.read(row["path"])
        for lo, hi in ((5000, 7000), (7000, 10000)):
            kept = band_db(after, rate, lo, hi) - band_db(before, rate, lo, hi)
            assert abs(kept) < 1.0, (name, lo, hi, kept)
    row = rows.loc[str(src / "hiss.wav")]
    cutoff = float(row["lowpass_hz"])
    assert 4000 <= cutoff <= 6000, cutoff
    after, _ = sf.read(row["path"])
    assert band_db(after, sr, 7000, 10000) < band_db(noisy, sr, 7000, 10000) - 40

    fixed = tmp_path / "fixed"
    proc = run_malmoi(
        "denoise", str(src / "clean.wav"), "--out", str(fixed), "--lowpass", "5000",
        "--no-scores",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = read_manifest(fixed).iloc[0]
    assert float(row["lowpass_hz"]) == 5000  # a column of numbers reads back as numbers
    after, _ = sf.read(row["path"])
    assert band_db(after, sr, 7000, 10000) < band_db(x, sr, 7000, 10000) - 40


# 3. the evaluation's bandwidth measure -------------------------------------------------------


def test_lsd_band_sees_what_a_lowpass_costs(korean: tuple[np.ndarray, int]) -> None:
    x, sr = korean
    assert lsd_band(x, x, sr) == pytest.approx(0.0, abs=1e-6)
    assert lsd_band(0.2 * x, x, sr) == pytest.approx(0.0, abs=1e-3)  # level does not count
    costs = []
    for cutoff in (7000, 5000, 3500):
        sos = signal.butter(12, cutoff, fs=sr, output="sos")
        costs.append(lsd_band(signal.sosfiltfilt(sos, x), x, sr))
    assert 0.5 < costs[0] < costs[1] < costs[2], costs
    assert costs[1] > 5.0, costs  # a 5 kHz low-pass removes most of 4-8 kHz
    # hum leaves the band clean; hiss does not
    n = len(x)
    assert lsd_band(mix_at_snr(x, hum(n, sr), 10.0), x, sr) < 1.0
    assert lsd_band(mix_at_snr(x, hiss_above(n, sr), 10.0), x, sr) > 10.0
