"""Audio and video made by the tests themselves, with real ffmpeg and espeak-ng."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from ingest.synthetic import mux


def tone(seconds: float, sr: int = 44100, channels: int = 2, freq: float = 440.0) -> np.ndarray:
    """A sine tone (with a little noise) of exactly ``seconds`` × ``sr`` frames."""
    n = round(seconds * sr)
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def write_wav(path: Path, audio: np.ndarray, sr: int = 44100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, subtype="PCM_16")
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def mp4_with_audio(path: Path, seconds: float, sr: int = 44100, channels: int = 2) -> Path:
    """An mp4 with an H.264 video track and an AAC audio track of exactly ``seconds``."""
    wav = write_wav(path.with_suffix(".src.wav"), tone(seconds, sr, channels), sr)
    mux(path, seconds, wav)
    wav.unlink()
    return path


def video_only(path: Path, seconds: float = 1.0) -> Path:
    return mux(path, seconds, audio=None)


def encode(src_wav: Path, dest: Path, *codec_args: str) -> Path:
    ffmpeg("-i", str(src_wav), *codec_args, str(dest))
    return dest


def korean_speech(
    path: Path, text: str = "안녕하세요. 말모이 시험입니다.", voice: str = "ko"
) -> Path:
    """Korean speech from espeak-ng (22.05 kHz mono WAV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return path
