"""Synthetic engine: the demo's media, made on the spot so the pipeline runs with no input.

Writes into ``<raw>/``: ``말모이_데모.mp4`` (or ``.m4a`` without video) — Korean sentences
spoken by espeak-ng in alternating voices over a synthesised music bed — beside it
``말모이_데모.ko.vtt``, subtitles of the sentences it speaks (one cue a sentence), and, under
``reference/``, the clean speech, the music alone and who speaks when (``turns.csv``), so later
stages can be scored against the truth, and ``reference/voices/<voice>/`` three clean clips of
each voice saying sentences the episode does not hold (the speaker filter's references).
Everything is deterministic; existing files are kept.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from malmoi.audio import read_audio
from malmoi.config import SyntheticSource
from malmoi.files import atomic_path, atomic_write_text
from malmoi.logs import get_logger
from malmoi.procs import tool_command
from malmoi.synth import music_bed
from malmoi.tools import require_ffmpeg

log = get_logger(__name__)

SAMPLE_RATE = 44100  # the demo's media; music_bed (malmoi.synth) is made at the same rate
SENTENCES = [
    "안녕하세요. 말모이 데모에 오신 것을 환영합니다.",
    "오늘은 날씨가 정말 맑고 따뜻하네요.",
    "이 도구는 한국어 음성 데이터를 모아서 정리합니다.",
    "음악을 걷어내고 목소리만 남기는 것이 첫 단계입니다.",
    "그다음에는 말하는 사람과 성별을 구분합니다.",
    "짧은 감탄사도 중요한 학습 자료가 될 수 있어요.",
    "라디오 방송 천 편에서도 한 사람의 목소리를 찾을 수 있습니다.",
    "잡음을 줄이고 나면 문장 단위로 잘라서 저장합니다.",
    "모든 결과는 매니페스트 파일에 기록됩니다.",
    "다시 실행하면 끝난 작업은 건너뜁니다.",
    "고맙습니다. 다음에 또 만나요.",
    "말모이는 우리말을 모은다는 뜻입니다.",
]

VOICE_SENTENCES = [  # not in SENTENCES: a reference never is a slice of the episode
    "도서관에서 책을 빌려 읽는 것을 좋아합니다.",
    "내일 아침에는 일찍 일어나서 산책을 하겠습니다.",
    "시장에 가서 사과와 배를 조금 샀어요.",
]


def generate(source: SyntheticSource, raw_dir: Path) -> list[Path]:
    """Make the demo media in ``raw_dir`` (once) and return the media file paths."""
    require_ffmpeg()
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(
            "espeak-ng not found on PATH: the demo speaks Korean with it "
            "(Debian/Ubuntu: sudo apt-get install espeak-ng; macOS: brew install espeak-ng)"
        )
    media = raw_dir / ("말모이_데모.mp4" if source.video else "말모이_데모.m4a")
    voice_references(source.voices, raw_dir / "reference" / "voices")
    subtitles = subtitle_path(media)
    if media.exists():
        turns_csv = raw_dir / "reference" / "turns.csv"
        if not subtitles.exists() and turns_csv.exists():
            write_subtitles(subtitles, read_turns(turns_csv))
        return [media]
    raw_dir.mkdir(parents=True, exist_ok=True)
    speech, turns = _speech(source.voices)
    music = music_bed(len(speech) + SAMPLE_RATE)  # a second of outro
    speech = np.pad(speech, (SAMPLE_RATE // 2, len(music) - len(speech) - SAMPLE_RATE // 2))
    gain = _rms(speech) / max(_rms(music), 1e-9) * 10 ** (source.music_gain_db / 20)
    music_st = np.stack([music * 0.9, music * 1.1], axis=1) * gain  # a little stereo width
    speech_st = np.stack([speech, speech], axis=1)
    mix = speech_st + music_st
    peak = float(np.max(np.abs(mix)))
    scale = 0.9 / peak if peak > 0.9 else 1.0

    ref = raw_dir / "reference"
    _write_wav(ref / "speech.wav", speech_st * scale)
    _write_wav(ref / "music.wav", music_st * scale)
    offset = 0.5
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["start", "stop", "voice", "text"])
    for start, stop, voice, text in turns:
        writer.writerow([f"{start + offset:.3f}", f"{stop + offset:.3f}", voice, text])
    atomic_write_text(ref / "turns.csv", buf.getvalue())
    write_subtitles(subtitles, [(a + offset, b + offset, text) for a, b, _, text in turns])

    with tempfile.TemporaryDirectory() as tmp:
        mix_wav = Path(tmp) / "mix.wav"
        _write_wav(mix_wav, mix * scale)
        mux(media, len(mix) / SAMPLE_RATE, mix_wav, video=source.video)
    log.info("demo media written: %s (%.1f s)", media, len(mix) / SAMPLE_RATE)
    return [media]


def subtitle_path(media: Path) -> Path:
    """Where the demo's subtitles go: ``<media stem>.ko.vtt`` beside the media."""
    return media.with_name(f"{media.stem}.ko.vtt")


def read_turns(turns_csv: Path) -> list[tuple[float, float, str]]:
    """``(start, stop, text)`` of each sentence in ``reference/turns.csv`` (media seconds)."""
    with turns_csv.open(encoding="utf-8", newline="") as f:
        return [(float(r["start"]), float(r["stop"]), r["text"]) for r in csv.DictReader(f)]


def write_subtitles(dest: Path, cues: list[tuple[float, float, str]]) -> None:
    """Write ``dest`` atomically: WebVTT with one cue per ``(start, stop, text)``."""

    def stamp(seconds: float) -> str:
        s, ms = divmod(round(seconds * 1000), 1000)
        return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{ms:03d}"

    blocks = [f"{stamp(a)} --> {stamp(b)}\n{text}\n" for a, b, text in cues]
    atomic_write_text(dest, "\n".join(["WEBVTT\nLanguage: ko\n", *blocks]))


def voice_references(voices: list[str], folder: Path) -> list[Path]:
    """Clean clips of each voice (``<folder>/<voice>/<n>.wav``, espeak-ng WAV, made once)."""
    out = []
    for voice in voices:
        for n, text in enumerate(VOICE_SENTENCES):
            path = folder / voice / f"{n}.wav"
            out.append(path)
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                subprocess.run(
                    tool_command(["espeak-ng", "-v", voice, "-s", "150", "-w", str(tmp), text]),
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
    return out


def _speech(voices: list[str]) -> tuple[np.ndarray, list[tuple[float, float, str, str]]]:
    """Speak the sentences, alternating voices, with pauses; return audio and the turns."""
    parts: list[np.ndarray] = []
    turns: list[tuple[float, float, str, str]] = []
    t = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            voice = voices[i % len(voices)]
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(
                tool_command(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text]),
                check=True,
                capture_output=True,
                timeout=120,
            )
            clip = read_audio(wav, SAMPLE_RATE)
            turns.append((t / SAMPLE_RATE, (t + len(clip)) / SAMPLE_RATE, voice, text))
            pause = np.zeros(int(SAMPLE_RATE * (0.4 + 0.3 * (i % 3))), dtype=np.float32)
            parts += [clip, pause]
            t += len(clip) + len(pause)
    speech = np.concatenate(parts)
    return speech / max(float(np.max(np.abs(speech))), 1e-9) * 0.5, turns


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _write_wav(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def mux(dest: Path, seconds: float, audio: Path | None, video: bool = True) -> Path:
    """Write ``dest`` atomically: ``audio`` (a WAV) encoded as AAC, with a test-pattern H.264
    video track of ``seconds`` when ``video`` (an mp4 as crawled videos are), else audio only
    (m4a). With ``audio=None`` the file has video and no sound."""
    video_in = ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=10:duration={seconds:.3f}"]
    video_out = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    with atomic_path(dest) as tmp:
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
        cmd += video_in if video else []
        cmd += ["-i", str(audio)] if audio is not None else []
        if video and audio is not None:
            cmd += ["-map", "0:v", "-map", "1:a"]
        cmd += video_out if video else []
        cmd += ["-c:a", "aac", "-b:a", "192k"] if audio is not None else []
        subprocess.run(tool_command([*cmd, str(tmp)]), check=True, capture_output=True, timeout=600)
    return dest
