"""Separation quality: mixtures with known parts, each engine's vocals scored against the clean
speech (SI-SDR, its improvement over the mixture, SNR), as a table and a spectrogram plot; with
an ASR engine, also the WER of Whisper on the clean speech, the mixture and each engine's vocals.

Mixtures: speech over MUSAN music or noise (the isolated parts of ``../shared``'s
``data/ina/musanmix.wav``) at several speech-to-background ratios. The speech is LibriSpeech
utterances (no text) or espeak-ng English sentences (:mod:`eval.espeak`, known text, so WER can
be scored). They are written once to the mixtures folder (``<name>/mixture.wav``, ``speech.wav``,
``background.wav``, and ``speech.txt`` for espeak-ng speech) and reused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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

    @property
    def text(self) -> str | None:
        """What the speech says (espeak-ng speech), None when unknown (LibriSpeech)."""
        path = self.folder / "speech.txt"
        return path.read_text(encoding="utf-8").strip() if path.exists() else None


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


def espeak_track(seconds: float, cache: Path) -> tuple[np.ndarray, str]:
    """espeak-ng English sentences (the voices in turn, 0.5 s apart) at 44.1 kHz, mono, as many
    whole sentences as fit in ``seconds`` (silence after them), and their text."""
    from eval.espeak import SENTENCES, VOICES, say

    gap = np.zeros(int(0.5 * SR), np.float32)
    parts, said, total = [gap], [], len(gap)
    for i in range(1000):
        clip = say(SENTENCES[i % len(SENTENCES)], VOICES[i % len(VOICES)], SR, cache)
        if total + len(clip) > seconds * SR:
            break
        parts += [clip, gap]
        said.append(SENTENCES[i % len(SENTENCES)])
        total += len(clip) + len(gap)
    if not said:
        raise ValueError(f"{seconds} s holds no whole sentence")
    track = np.concatenate(parts)[: int(seconds * SR)]
    return np.pad(track, (0, int(seconds * SR) - len(track))), " ".join(said)


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
    speech_kind: Literal["librispeech", "espeak"] = "librispeech",
) -> list[Mixture]:
    """Write (once) and return speech+background mixtures, stereo 44.1 kHz, peak ≤ 0.9; the
    speech is LibriSpeech (``speech+…`` folders) or espeak-ng English with its text
    (``espeak+…`` folders, ``speech.txt``)."""
    out = []
    speech = None
    text = ""
    prefix = "speech" if speech_kind == "librispeech" else "espeak"
    for kind in kinds:
        for level in snrs:
            name = f"{prefix}+{kind}@{level:g}dB"
            m = Mixture(name, folder / name)
            out.append(m)
            if m.mixture.exists() and m.speech.exists():
                continue
            if speech is None:
                if speech_kind == "espeak":
                    speech, text = espeak_track(seconds, folder / "espeak")
                else:
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
            if text:
                (m.folder / "speech.txt").write_text(text + "\n", encoding="utf-8")
    return out


@dataclass
class Score:
    mixture: str
    engine: str
    si_sdr: float
    si_sdr_mixture: float
    snr: float
    seconds: float
    # Whisper's WER against the speech's text (None: no text, or no ASR engine given)
    wer: float | None = None
    wer_mixture: float | None = None
    wer_clean: float | None = None

    @property
    def improvement(self) -> float:
        return self.si_sdr - self.si_sdr_mixture


def score_file(vocals: Path, mixture: Mixture) -> tuple[float, float, float]:
    """SI-SDR of the vocals, SI-SDR of the mixture itself, SNR of the vocals."""
    ref = to_mono(sf.read(str(mixture.speech), dtype="float32")[0])
    mix_sig = to_mono(sf.read(str(mixture.mixture), dtype="float32")[0])
    est = to_mono(sf.read(str(vocals), dtype="float32")[0])
    return si_sdr(est, ref), si_sdr(mix_sig, ref), snr(est, ref)


def asr_wer(asr: Any, path: Path, text: str) -> float:
    """English WER of ``asr`` (a :class:`transcribe.whisper.WhisperEngine`, language en) on the
    file at ``path`` (mixed to mono, 16 kHz) against ``text``."""
    from transcribe.cer import wer

    return wer(text, asr.transcribe([read_audio(path, 16000)], "en")[0].text)


def evaluate(
    engines: dict[str, object], mixtures: list[Mixture], out_dir: Path, asr: Any = None
) -> list[Score]:
    """Run every engine (objects with ``separate_file``) on every mixture and score them; with
    ``asr`` (a loaded :class:`transcribe.whisper.WhisperEngine`), the WER of the clean speech,
    the mixture and the vocals too, where the mixture's text is known."""
    scores = []
    heard: dict[str, tuple[float, float]] = {}  # mixture -> WER of the clean speech, the mixture
    for name, engine in engines.items():
        for m in mixtures:
            folder = out_dir / name / m.name
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            engine.separate_file(m.mixture, folder / "vocals.wav", folder / "accompaniment.wav")
            took = time.perf_counter() - started
            s, s_mix, n = score_file(folder / "vocals.wav", m)
            score = Score(m.name, name, s, s_mix, n, took)
            text = m.text
            if asr is not None and text:
                if m.name not in heard:
                    heard[m.name] = (asr_wer(asr, m.speech, text), asr_wer(asr, m.mixture, text))
                score.wer_clean, score.wer_mixture = heard[m.name]
                score.wer = asr_wer(asr, folder / "vocals.wav", text)
            scores.append(score)
            log.info("%s on %s: SI-SDR %.2f dB (mixture %.2f dB)", name, m.name, s, s_mix)
    return scores


def table(scores: list[Score]) -> str:
    """A Markdown table of the scores (the WER columns when any score has a WER)."""
    header = ["mixture", "engine", "SI-SDR vocals (dB)", "SI-SDR mixture (dB)"]
    header += ["improvement (dB)", "SNR (dB)"]
    with_wer = any(s.wer is not None for s in scores)
    if with_wer:
        header += ["WER vocals", "WER mixture", "WER clean speech"]
    rows = []
    for s in scores:
        row = [
            s.mixture,
            s.engine,
            *(f"{v:.2f}" for v in (s.si_sdr, s.si_sdr_mixture)),
            f"{s.improvement:+.2f}",
            f"{s.snr:.2f}",
        ]
        if with_wer:
            row += ["—" if v is None else f"{v:.3f}" for v in (s.wer, s.wer_mixture, s.wer_clean)]
        rows.append(row)
    return markdown_table(header, rows, right=range(2, len(header)))


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
