"""Audio I/O: probing and decoding with ffmpeg, reading and writing WAVs, resampling.

Every output is written atomically (:mod:`malmoi.files`); ffmpeg and ffprobe run through
:mod:`malmoi.tools`.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from malmoi.files import atomic_path
from malmoi.tools import MediaError, last_line, run_ffmpeg, run_tool

PROBE_TIMEOUT = 120.0  # seconds for ffprobe to describe a file


@dataclass(frozen=True)
class ProbeInfo:
    """What ffprobe says of a media file's first audio stream."""

    format_name: str
    codec: str
    duration: float | None  # None: unknown (streamed WebM/MKV, live recordings, empty streams)
    stream_duration: float | None  # from the stream's own timestamps, when the container has it
    sample_rate: int
    channels: int
    has_video: bool


def probe(path: Path) -> ProbeInfo:
    """Probe ``path``; raise :class:`MediaError` if it holds no decodable audio."""
    if not path.exists():
        raise MediaError("no such file")
    if path.is_dir():
        raise MediaError("is a folder, not a media file")
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    proc = run_tool(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        timeout=PROBE_TIMEOUT,
        what="ffprobe",
    )
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise MediaError(f"not a readable media file (ffprobe: {last_line(stderr)})")
    try:
        info = json.loads(proc.stdout.decode(errors="replace") or "{}")
    except json.JSONDecodeError:
        raise MediaError("ffprobe returned no usable description") from None
    streams = info.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    kinds = sorted({s.get("codec_type", "?") for s in streams})
    if not audio:
        raise MediaError(f"no audio stream (streams: {', '.join(kinds) or 'none'})")
    stream = audio[0]
    duration = as_float(stream.get("duration")) or as_float(info.get("format", {}).get("duration"))
    return ProbeInfo(
        format_name=str(info.get("format", {}).get("format_name", "")),
        codec=str(stream.get("codec_name", "")),
        duration=duration,
        stream_duration=as_float(stream.get("duration")),
        sample_rate=int(as_float(stream.get("sample_rate")) or 0),
        channels=int(stream.get("channels") or 0),
        has_video=any(
            s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
            for s in streams
        ),
    )


def as_float(value: object) -> float | None:
    """``value`` as a float, or None when it is not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def decode_to_wav(
    src: Path, dest: Path, sample_rate: int, channels: int, exact_duration: float | None = None
) -> None:
    """Decode the first audio stream of ``src`` to 16-bit PCM WAV at ``dest``, atomically.

    Large outputs switch to RF64 automatically, so multi-hour inputs stay valid WAV. When the
    container states the stream's exact duration (``exact_duration``), encoder padding that the
    decoder leaves at the end (ffmpeg 5 keeps up to a frame of AAC padding) is cut off.
    """
    _decode(
        src,
        dest,
        ["-ac", str(channels), "-ar", str(sample_rate), "-c:a", "pcm_s16le"],
        frames=round(exact_duration * sample_rate) if exact_duration else None,
        seconds=exact_duration,
    )


def _decode(
    src: Path, dest: Path, output_args: list[str], frames: int | None, seconds: float | None
) -> None:
    """ffmpeg: the first audio stream of ``src`` as a bare WAV (RF64 when large) at ``dest``,
    atomically; decoder padding past ``frames`` (up to 0.1 s) is cut off."""
    inputs = ["-i", str(src), "-map", "0:a:0", "-vn", "-sn", "-dn"]
    with atomic_path(dest, suffix=".wav") as tmp:
        run_ffmpeg(
            [*inputs, *output_args, "-rf64", "auto", *_BARE_WAV, str(tmp)],
            "ffmpeg could not decode it",
            media_seconds=seconds,
        )
        if frames:
            _trim_padding(tmp, frames, max_excess=wav_info(tmp).sample_rate // 10)


SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile's command (sndfile.h)


def sound_file(path: Path, mode: str = "w", **kwargs: object):  # -> soundfile.SoundFile
    """``soundfile.SoundFile(path, mode, ...)`` for writing, without the PEAK chunk libsndfile
    adds to float WAVs: that chunk holds the time of writing, so the same audio written twice
    would differ in its header. Without it the same run gives byte-identical files."""
    import soundfile as sf

    fh = sf.SoundFile(str(path), mode, **kwargs)
    with contextlib.suppress(AttributeError):  # another soundfile: the header keeps a time
        sf._snd.sf_command(fh._file, SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
    return fh


def write_wav_like(dest: Path, audio, source) -> None:  # audio: (n, channels); source: SoundFile
    """Write ``audio`` atomically as a WAV at ``source``'s rate, in its PCM subtype (float when
    the source is not PCM): a slice cut from ``source`` keeps its samples exactly."""
    subtype = source.subtype if source.subtype in PCM_SUBTYPES else "FLOAT"
    with (
        atomic_path(dest) as tmp,
        sound_file(
            tmp,
            "w",
            samplerate=source.samplerate,
            channels=audio.shape[1],
            subtype=subtype,
            format="WAV",
        ) as out,
    ):
        out.write(audio)


def _trim_padding(wav: Path, frames: int, max_excess: int) -> None:
    """Cut ``wav`` to ``frames`` if it is longer by at most ``max_excess`` (codec padding)."""

    with sound_file(wav, "r+") as fh:
        if 0 < fh.frames - frames <= max_excess:
            fh.truncate(frames)


@dataclass(frozen=True)
class WavInfo:
    """Exact length and format of a decoded WAV."""

    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def wav_info(path: Path) -> WavInfo:
    """Read a WAV header (frames counted exactly, not estimated)."""
    import soundfile as sf

    info = sf.info(str(path))
    return WavInfo(
        frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels)
    )


CODEC_ARGS: dict[str, list[str]] = {
    "flac": ["-c:a", "flac", "-sample_fmt", "s32"],
    "mp3": ["-c:a", "libmp3lame", "-q:a", "2"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "6"],
    "m4a": ["-c:a", "aac", "-b:a", "256k"],
    "wma": ["-c:a", "wmav2", "-b:a", "256k", "-f", "asf"],
}


def encode(src_wav: Path, dest: Path, codec: str) -> None:
    """Encode a WAV to ``codec`` (flac, mp3, ogg, m4a, wma) at ``dest``, atomically."""
    with atomic_path(dest) as tmp:
        run_ffmpeg(
            ["-i", str(src_wav), *CODEC_ARGS[codec], str(tmp)], f"ffmpeg could not encode {codec}"
        )


def energy(path: Path, block_frames: int = 1 << 20) -> tuple[float, int]:
    """Sum of squared samples (all channels) and frame count, read block by block."""
    import numpy as np
    import soundfile as sf

    total, frames = 0.0, 0
    with sf.SoundFile(str(path)) as fh:
        for block in fh.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
            total += float(np.sum(np.square(block, dtype=np.float64)))
            frames += len(block)
        channels = fh.channels
    return total / max(channels, 1), frames


def read_audio(path: Path, sample_rate: int, mono: bool = True):  # -> numpy.ndarray
    """Decode a (short) file with ffmpeg to float32 at ``sample_rate``: (n,) if ``mono`` else
    (n, channels). Loads it all: for clips, references and tests, not for long inputs."""
    import numpy as np

    channels = 1 if mono else (probe(path).channels or 1)
    out = run_ffmpeg(
        [
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-ac",
            str(channels),
            "-ar",
            str(sample_rate),
            "-f",
            "f32le",
            "-",
        ],
        "ffmpeg could not decode it",
    )
    audio = np.frombuffer(out, dtype=np.float32).copy()
    return audio if mono else audio.reshape(-1, channels)


def pcm_sha256(path: Path) -> str:
    """sha256 of a WAV's int16 samples, not of the file's bytes: two files with the same
    audio and other headers (another writer, a LIST chunk) hash alike."""
    import hashlib

    import soundfile as sf

    digest = hashlib.sha256()
    with sf.SoundFile(str(path)) as fh:
        digest.update(f"{fh.channels}:".encode())
        for block in fh.blocks(blocksize=1 << 16, dtype="int16", always_2d=True):
            digest.update(block.tobytes())
    return digest.hexdigest()


# --- reading any stem losslessly, and resampling ---------------------------------------------

# libsndfile subtypes a WAV can hold that decode exactly (no codec delay or padding)
PCM_SUBTYPES = frozenset({"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})
# a WAV with no LIST/INFO chunk: libsndfile opens such a file for editing ("r+") only
_BARE_WAV = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "wav"]


def sndfile_pcm(path: Path) -> bool:
    """True when libsndfile opens ``path`` as plain PCM or float samples (WAV, FLAC, AIFF):
    then reading it directly gives exactly what ffmpeg would decode. Lossy formats (MP3, Ogg
    Vorbis, Opus) and formats libsndfile cannot open (m4a, wma) give False."""
    import soundfile as sf

    try:
        return sf.info(str(path)).subtype in PCM_SUBTYPES
    except RuntimeError:  # libsndfile cannot open it (soundfile's errors derive from it)
        return False


def decode_to_float_wav(
    src: Path, dest: Path, frames: int | None = None, seconds: float | None = None
) -> None:
    """Decode the first audio stream of ``src`` to 32-bit float WAV at ``dest`` (its own rate
    and channels; RF64 when large). ``frames``: the length the audio is known to have; decoder
    padding past it (up to 0.1 s, e.g. AAC's last frame) is cut off. ``seconds``: its duration
    when known (for ffmpeg's timeout)."""
    _decode(src, dest, ["-c:a", "pcm_f32le"], frames=frames, seconds=seconds)


_SOXR: list[bool] = []  # the answer of has_soxr, once known


def has_soxr() -> bool:
    """Whether this ffmpeg has the SoX resampler (libsoxr); asked once per process."""
    if _SOXR:
        return _SOXR[0]
    try:
        run_ffmpeg(
            [
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=8000:cl=mono",
                "-t",
                "0.01",
                "-af",
                "aresample=16000:resampler=soxr",
                "-f",
                "null",
                "-",
            ],
            "no soxr",
            media_seconds=0.01,
        )
    except MediaError:
        _SOXR.append(False)
    else:
        _SOXR.append(True)
    return _SOXR[0]


def resample_wav(src: Path, dest: Path, sample_rate: int, frames: int | None = None) -> None:
    """Resample a WAV to ``sample_rate`` as 32-bit float WAV at ``dest``, channels kept.

    Uses the SoX resampler at very high quality (28-bit precision) when ffmpeg has it, else
    ffmpeg's own with a long filter. ``frames``: make the output exactly this long, cutting or
    zero-padding the last few samples the resampler's rounding leaves over or short.
    """
    if has_soxr():
        resampler = f"aresample={sample_rate}:resampler=soxr:precision=28"
    else:
        resampler = f"aresample={sample_rate}:filter_size=64:phase_shift=12:cutoff=0.97"
    with atomic_path(dest, suffix=".wav") as tmp:
        run_ffmpeg(
            [
                "-i",
                str(src),
                "-af",
                resampler,
                "-c:a",
                "pcm_f32le",
                "-rf64",
                "auto",
                *_BARE_WAV,
                str(tmp),
            ],
            f"ffmpeg could not resample to {sample_rate} Hz",
            media_seconds=wav_info(src).duration,
        )
        if frames is not None:
            fit_frames(tmp, frames)


def fit_frames(wav: Path, frames: int) -> None:
    """Cut ``wav`` to ``frames`` or pad it with silence up to ``frames``, in place."""
    import numpy as np
    import soundfile as sf

    with sound_file(wav, "r+") as fh:
        if fh.frames > frames:
            fh.truncate(frames)
        elif fh.frames < frames:
            fh.seek(0, sf.SEEK_END)
            fh.write(np.zeros((frames - fh.frames, fh.channels), np.float32))
