"""English speech with a known text from espeak-ng: the sentences and voices the ASR benches
(:mod:`eval.asr`, the WER column of :mod:`eval.separation`) score Whisper's words against."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np

from malmoi.audio import read_audio

# 12 everyday sentences (7–10 words, no numbers or names to spell). Harvard sentences ("The birch
# canoe slid on the smooth planks.") were tried first: Whisper base heard espeak-ng's clean
# voices at about 0.7 WER on them (no context to lean on), no baseline to compare noise against.
SENTENCES = (
    "The weather was warm and sunny all week.",
    "She opened the window to let in some fresh air.",
    "We took the train to the city on Monday morning.",
    "My brother likes to read books before going to bed.",
    "The children played football in the park after school.",
    "Please close the door when you leave the room.",
    "He bought a cup of coffee and a piece of cake.",
    "The old man walked slowly down the quiet street.",
    "They planted flowers in the garden last spring.",
    "I forgot my umbrella and got wet in the rain.",
    "The doctor told him to drink more water every day.",
    "Our teacher gave us a short test on Friday.",
)
VOICES = ("en-us", "en+m3", "en+f2")
# espeak-ng's Korean voice, which Whisper hears badly (auto-detected as Thai)
KOREAN = "오늘은 날씨가 맑아서 공원에 산책을 갔습니다."


def say(text: str, voice: str, sample_rate: int, cache: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng ``voice``, mono float32 at ``sample_rate`` (espeak-ng's own
    22.05-kHz WAV kept under ``cache``, made once)."""
    key = hashlib.sha1(f"{voice}\n{text}".encode()).hexdigest()[:12]
    wav = cache / f"espeak-{voice.replace('+', '_')}-{key}.wav"
    if not wav.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = wav.with_suffix(".tmp.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(tmp), text], check=True)
        tmp.replace(wav)
    return read_audio(wav, sample_rate)
