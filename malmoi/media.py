"""Media I/O: probing and decoding with ffmpeg, and atomic file writes.

Every file malmoi writes goes to a temporary name in the destination folder first (a name with
``.malmoi-tmp`` in it, :data:`TMP_MARK`) and is renamed into place, so a crash never leaves a
half-written file under a final name; what a killed run leaves behind is recognised by that
mark and removed when the stage next starts (:func:`remove_stale_temporaries`).

ffmpeg and ffprobe run with a timeout (a hanging input never stalls a crawl) and die with the
process that started them (:func:`malmoi.procs.tool_command`). A tool that fails because the
disk is full or memory ran out raises :class:`~malmoi.errors.EnvironmentFailure`, not an input
error: the input is not to blame.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from malmoi.errors import EnvironmentFailure, ItemError
from malmoi.logs import get_logger
from malmoi.procs import tool_command

log = get_logger(__name__)

TMP_MARK = ".malmoi-tmp"  # in the name of every temporary file and folder malmoi makes
PROBE_TIMEOUT = 120.0  # seconds for ffprobe to describe a file
# ffmpeg: a fixed allowance plus this many seconds per second of media (decoding runs at
# hundreds of times real time; only a stuck process comes near it)
FFMPEG_TIMEOUT_BASE = 300.0
FFMPEG_TIMEOUT_PER_SECOND = 0.5
# what ffmpeg prints when the machine, not the input, is at fault
_ENVIRONMENT_MESSAGES = ("No space left on device", "Cannot allocate memory", "Disk quota")


class MediaError(ItemError):
    """An input cannot be used; ``str(exc)`` is a one-line reason."""


# --- atomic writes ---------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(dest: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    The temporary name keeps ``dest``'s suffix (or ``suffix``) so tools that guess the format
    from the file name (ffmpeg, soundfile) still work.
    """
    tmp_path = temp_file(dest, suffix)
    try:
        yield tmp_path
        sync(tmp_path)  # the data is on disk before a progress row vouches for it
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def temp_file(dest: Path, suffix: str | None = None) -> Path:
    """A new empty temporary file beside ``dest``, named ``.<name>.<random>.malmoi-tmp<ext>``
    (keeping the ending so tools that guess the format from it still work), readable as a
    dataset file should be."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=TMP_MARK + (suffix or dest.suffix), dir=dest.parent
    )
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes it private; a dataset is for sharing
    return Path(tmp)


def temp_dir(parent: Path) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder inside ``parent`` (removed on exit; a killed run's is removed when
    the stage next starts)."""
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=parent, prefix=TMP_MARK + "-")


def sync(path: Path) -> None:
    """fsync a file or folder (so a rename that follows never exposes an empty file after a
    crash, and a rename in a folder survives one)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    """A temporary file or folder of malmoi's: this version's mark, or the names earlier
    versions used (``.<name>.<random>.tmp<ext>`` files, ``.tmp-<random>`` folders)."""
    return TMP_MARK in name or bool(_LEGACY_TMP.match(name))


_LEGACY_TMP = re.compile(r"^\.(tmp-[A-Za-z0-9_]{8}|.+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?)$")


def remove_stale_temporaries(folder: Path, marker: str | None = None) -> tuple[int, int]:
    """Remove the temporary files and folders a killed run left anywhere under ``folder``;
    return how many and their bytes. Only call it while holding the folder's lock. A
    sub-folder holding a file named ``marker`` (another stage's folder, with its own lock, as
    ``OUT/ingest`` inside ``malmoi separate``'s ``OUT``) is left to its own stage."""
    count = size = 0
    for root, dirs, files in os.walk(folder):
        if marker is not None:
            dirs[:] = [d for d in dirs if not (Path(root) / d / marker).exists()]
        for name in [d for d in dirs if is_temporary(d)]:
            path = Path(root) / name
            size += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
            dirs.remove(name)
            count += 1
        for name in files:
            if is_temporary(name):
                path = Path(root) / name
                with contextlib.suppress(OSError):
                    size += path.stat().st_size
                    path.unlink()
                    count += 1
    return count, size


def atomic_write_text(dest: Path, text: str) -> None:
    """Write ``text`` to ``dest`` atomically (UTF-8)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --- ffmpeg ----------------------------------------------------------------------------------


def require_ffmpeg() -> None:
    """Raise a clear error when ffmpeg/ffprobe are not on PATH."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found on PATH: install ffmpeg "
            "(Debian/Ubuntu: sudo apt-get install ffmpeg; macOS: brew install ffmpeg)"
        )


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


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


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
        raise MediaError(f"not a readable media file (ffprobe: {_last_line(stderr)})")
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


def run_tool(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[bytes]:
    """Run an external tool that dies with us; kill it after ``timeout`` seconds (an input
    that makes it hang is the input's fault: :class:`MediaError`). A tool killed by a signal
    we did not send (the out-of-memory killer) is an environment failure."""
    try:
        proc = subprocess.run(tool_command(args), capture_output=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MediaError(
            f"{what} did not finish within {timeout:.0f} s (stuck on this input)"
        ) from None
    if proc.returncode < 0:
        raise EnvironmentFailure(f"{what} was killed by signal {-proc.returncode} (out of memory?)")
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 and any(m in stderr for m in _ENVIRONMENT_MESSAGES):
        raise EnvironmentFailure(f"{what}: {_last_line(stderr)}")
    return proc


def ffmpeg_timeout(seconds_of_media: float | None) -> float:
    """How long ffmpeg may take on ``seconds_of_media`` (unknown: a day's worth)."""
    media = 86400.0 if seconds_of_media is None else max(seconds_of_media, 0.0)
    return FFMPEG_TIMEOUT_BASE + FFMPEG_TIMEOUT_PER_SECOND * media


def run_ffmpeg(
    args: list[str], failure: str, media_seconds: float | None = None, timeout: float | None = None
) -> bytes:
    """Run ffmpeg quietly; return its stdout; raise :class:`MediaError` ``failure (reason)``.

    ``media_seconds`` (the input's duration, when known) sets the timeout, or ``timeout``."""
    proc = run_tool(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        timeout=ffmpeg_timeout(media_seconds) if timeout is None else timeout,
        what="ffmpeg",
    )
    if proc.returncode != 0:
        raise MediaError(f"{failure} ({_last_line(proc.stderr.decode(errors='replace'))})")
    return proc.stdout


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
