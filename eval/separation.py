"""Separation quality: mixtures with known parts, each engine's vocals scored against the clean
speech (SI-SDR, its improvement over the mixture, SNR), as a table and a spectrogram plot.

Mixtures come from ../shared: LibriSpeech utterances (speech) over MUSAN music or noise (the
isolated parts of ``data/ina/musanmix.wav``) at several speech-to-background ratios. They are
written once to the mixtures folder (``<name>/mixture.wav``, ``speech.wav``, ``background.wav``)
and reused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from eval.common import markdown_table, si_sdr, snr, snr_gain, to_mono
from malmoi.audio import read_audio
from malmoi.logs import get_logger

log = get_logger(__name__)

SR = 44100
MUSIC = (0.0, 22.48)  # seconds of musanmix.wav that hold music only
NOISE = (29.08, 52.80)  # and noise only


@dataclass(frozen=True)
class Mixture:
    name: str
    folder: Path

    @property
    def mixture(self) -> Path:
        return self.folder / "mixture.wav"

    @property
    def speech(self) -> Path:
        return self.folder / "speech.wav"


def speech_track(shared: Path, seconds: float) -> np.ndarray:
    """LibriSpeech utterances (alternating female and male speakers) at 44.1 kHz, mono."""
    files = sorted((shared / "data/librispeech/speakers").glob("*.flac"))
    if not files:
        raise FileNotFoundError(f"no LibriSpeech files under {shared}/data/librispeech/speakers")
    parts, total = [], 0
    for f in files:
        clip = read_audio(f, SR)
        parts += [clip, np.zeros(int(0.3 * SR), np.float32)]
        total += len(clip)
        if total >= seconds * SR:
            break
    return np.concatenate(parts)[: int(seconds * SR)]


def background_track(shared: Path, kind: str, n: int) -> np.ndarray:
    """MUSAN music or noise from musanmix.wav, looped to ``n`` samples, mono 44.1 kHz."""
    start, stop = MUSIC if kind == "music" else NOISE
    full = read_audio(shared / "data/ina/musanmix.wav", SR)
    part = full[int(start * SR) : int(stop * SR)]
    return np.resize(part, n)


def mix(speech: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """Scale ``background`` so that speech power / background power is ``snr_db``."""
    return (background * snr_gain(speech, background, snr_db)).astype(np.float32)


def build_mixtures(
    shared: Path,
    folder: Path,
    seconds: float = 30.0,
    snrs: Sequence[float] = (0.0, -5.0),
    kinds: Sequence[str] = ("music", "noise"),
) -> list[Mixture]:
    """Write (once) and return speech+background mixtures, stereo 44.1 kHz, peak ≤ 0.9."""
    out = []
    speech = None
    for kind in kinds:
        for level in snrs:
            m = Mixture(f"speech+{kind}@{level:g}dB", folder / f"speech+{kind}@{level:g}dB")
            out.append(m)
            if m.mixture.exists() and m.speech.exists():
                continue
            if speech is None:
                speech = speech_track(shared, seconds)
            bg = mix(speech, background_track(shared, kind, len(speech)), level)
            gain = 0.9 / max(float(np.max(np.abs(speech + bg))), 1e-9)
            m.folder.mkdir(parents=True, exist_ok=True)
            for name, sig in (("speech", speech), ("background", bg), ("mixture", speech + bg)):
                sf.write(
                    str(m.folder / f"{name}.wav"),
                    np.stack([sig * gain] * 2, 1),
                    SR,
                    subtype="FLOAT",
                )
    return out


@dataclass
class Score:
    mixture: str
    engine: str
    si_sdr: float
    si_sdr_mixture: float
    snr: float
    seconds: float

    @property
    def improvement(self) -> float:
        return self.si_sdr - self.si_sdr_mixture


def score_file(vocals: Path, mixture: Mixture) -> tuple[float, float, float]:
    """SI-SDR of the vocals, SI-SDR of the mixture itself, SNR of the vocals."""
    ref = to_mono(sf.read(str(mixture.speech), dtype="float32")[0])
    mix_sig = to_mono(sf.read(str(mixture.mixture), dtype="float32")[0])
    est = to_mono(sf.read(str(vocals), dtype="float32")[0])
    return si_sdr(est, ref), si_sdr(mix_sig, ref), snr(est, ref)


def evaluate(engines: dict[str, object], mixtures: list[Mixture], out_dir: Path) -> list[Score]:
    """Run every engine (objects with ``separate_file``) on every mixture and score them."""
    scores = []
    for name, engine in engines.items():
        for m in mixtures:
            folder = out_dir / name / m.name
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            engine.separate_file(m.mixture, folder / "vocals.wav", folder / "accompaniment.wav")
            took = time.perf_counter() - started
            s, s_mix, n = score_file(folder / "vocals.wav", m)
            scores.append(Score(m.name, name, s, s_mix, n, took))
            log.info("%s on %s: SI-SDR %.2f dB (mixture %.2f dB)", name, m.name, s, s_mix)
    return scores


def table(scores: list[Score]) -> str:
    """A Markdown table of the scores."""
    header = ["mixture", "engine", "SI-SDR vocals (dB)", "SI-SDR mixture (dB)"]
    header += ["improvement (dB)", "SNR (dB)"]
    rows = [
        [
            s.mixture,
            s.engine,
            *(f"{v:.2f}" for v in (s.si_sdr, s.si_sdr_mixture)),
            f"{s.improvement:+.2f}",
            f"{s.snr:.2f}",
        ]
        for s in scores
    ]
    return markdown_table(header, rows, right=range(2, 6))


def plot(mixture: Mixture, engines: Sequence[str], out_dir: Path, dest: Path) -> None:
    """Spectrograms of the mixture, the clean speech and each engine's vocals, one above the
    other, for the first 15 seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import librosa
    import librosa.display
    import matplotlib.pyplot as plt

    panels = [("mixture", mixture.mixture), ("reference speech", mixture.speech)]
    panels += [(f"{e} vocals", out_dir / e / mixture.name / "vocals.wav") for e in engines]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True)
    for ax, (title, path) in zip(axes, panels, strict=True):
        y = to_mono(sf.read(str(path), dtype="float32", frames=15 * SR)[0])
        spec = librosa.amplitude_to_db(
            np.abs(librosa.stft(y, n_fft=2048, hop_length=512)), ref=np.max
        )
        librosa.display.specshow(spec, sr=SR, hop_length=512, x_axis="time", y_axis="log", ax=ax)
        ax.set_title(f"{title} — {mixture.name}")
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=80)
    plt.close(fig)
