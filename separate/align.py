"""Codec alignment: encoding a stem so that, decoded again, it keeps the input's timeline."""

from __future__ import annotations

import tempfile
from pathlib import Path

from malmoi.audio import CODEC_ARGS, encode, wav_info
from malmoi.files import atomic_path
from malmoi.tools import run_ffmpeg

_SHIFTS: dict[tuple[str, int, int], int] = {}


def codec_shift(codec: str, sample_rate: int, channels: int) -> int:
    """Samples by which a round trip through ``codec`` (ffmpeg's encoder, then its decoder)
    moves audio: negative when the decoded audio comes early. Measured once per process and
    format with a chirp. ffmpeg's wmav2 loses one frame at the start (512 to 2048 samples by
    rate); mp3, aac, vorbis and flac come back in place."""
    key = (codec, sample_rate, channels)
    if key in _SHIFTS:
        return _SHIFTS[key]
    import numpy as np
    import soundfile as sf

    n, at = 4096, sample_rate // 2
    t = np.arange(n) / sample_rate
    top = min(4000.0, sample_rate / 4)
    chirp = np.sin(2 * np.pi * (200 * t + (top - 200) / (2 * t[-1]) * t**2)) * np.hanning(n)
    probe_sig = np.zeros(sample_rate * 2, np.float32)
    probe_sig[at : at + n] = 0.5 * chirp
    with tempfile.TemporaryDirectory() as tmp:
        src, enc = Path(tmp) / "chirp.wav", Path(tmp) / f"chirp.{codec}"
        sf.write(str(src), np.repeat(probe_sig[:, None], channels, 1), sample_rate, "FLOAT")
        run_ffmpeg(
            ["-i", str(src), *CODEC_ARGS[codec], str(enc)],
            f"ffmpeg cannot encode {codec}",
            media_seconds=2.0,
        )
        out = run_ffmpeg(
            ["-i", str(enc), "-map", "0:a:0", "-ac", "1", "-f", "f32le", "-"],
            f"ffmpeg cannot decode {codec}",
            media_seconds=2.0,
        )
    decoded = np.frombuffer(out, np.float32)
    decoded = np.pad(decoded, (0, max(0, len(probe_sig) - len(decoded))))
    lags = np.arange(-at + 1, at)
    ref = probe_sig[at : at + n]
    scores = [np.dot(ref, decoded[at + lag : at + lag + n]) for lag in lags]
    _SHIFTS[key] = int(lags[int(np.argmax(scores))])
    return _SHIFTS[key]


def encode_aligned(src_wav: Path, dest: Path, codec: str) -> None:
    """:func:`encode`, compensating :func:`codec_shift` so that the decoded audio keeps the
    input's timeline (silence is put before it, or its first samples dropped)."""
    info = wav_info(src_wav)
    shift = codec_shift(codec, info.sample_rate, info.channels)
    if shift == 0:
        return encode(src_wav, dest, codec)
    fix = f"adelay={-shift}S:all=1" if shift < 0 else f"atrim=start_sample={shift}"
    with atomic_path(dest) as tmp:
        run_ffmpeg(
            ["-i", str(src_wav), "-af", fix, *CODEC_ARGS[codec], str(tmp)],
            f"ffmpeg could not encode {codec}",
            media_seconds=info.duration,
        )
