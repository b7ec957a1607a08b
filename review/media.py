"""What the review page draws and plays besides the slices' own files: a spectrogram of a slice
(PNG) and a few seconds of its source around it (WAV), made on demand and cached under
``<output_dir>/review/cache/`` (named by a hash of the file, its size and time, and the request),
so a second look costs a file read."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from malmoi.files import atomic_path

CACHE = "cache"
VERSION = "2"  # 2: scipy.signal.spectrogram
MAX_HZ = 8000.0  # speech lies below; the picture keeps its height for it
COLUMNS = 900  # at most this many time steps in a spectrogram


def cache_dir(output_dir: Path) -> Path:
    from review.decisions import FOLDER

    return Path(output_dir) / FOLDER / CACHE


def _key(path: Path, *parts: object) -> str:
    st = path.stat()
    text = "|".join(map(str, (VERSION, path, st.st_size, st.st_mtime_ns, *parts)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def spectrogram_png(audio: np.ndarray, sample_rate: int, height: int = 160) -> bytes:
    """A log-power spectrogram (0 to 8 kHz, 80 dB of range) as PNG bytes."""
    from matplotlib import image
    from scipy.signal import spectrogram as stft_power

    x = _mono(np.asarray(audio, dtype=np.float32))
    n_fft = 1 << max(8, int(np.ceil(np.log2(sample_rate * 0.025))))  # ~25 ms windows
    hop = max(n_fft // 4, int(np.ceil(max(len(x) - n_fft, 1) / COLUMNS)))
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    freqs, _, spec = stft_power(
        x, sample_rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop, mode="psd"
    )
    top = max(2, int(np.searchsorted(freqs, min(MAX_HZ, sample_rate / 2))))
    db = 10 * np.log10(spec[:top] + 1e-12)
    peak = float(db.max())
    db = np.clip(db, peak - 80.0, peak)
    if db.shape[0] != height:  # rows to a fixed height (nearest bin)
        rows = np.minimum((np.arange(height) * db.shape[0] / height).astype(int), db.shape[0] - 1)
        db = db[rows]
    buf = io.BytesIO()
    image.imsave(buf, db, cmap="magma", origin="lower", vmin=peak - 80.0, vmax=peak, format="png")
    return buf.getvalue()


def spectrogram(output_dir: Path, audio_file: Path) -> Path:
    """The cached spectrogram of ``audio_file`` (made now if it is not there yet)."""
    dest = cache_dir(output_dir) / f"spec-{_key(audio_file)}.png"
    if not dest.is_file():
        audio, sr = sf.read(str(audio_file), dtype="float32", always_2d=False)
        data = spectrogram_png(audio, sr)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
    return dest


def context(
    output_dir: Path, source_file: Path, start: float, stop: float, pad: float
) -> tuple[Path, float]:
    """``pad`` seconds of ``source_file`` before ``start`` and after ``stop`` with the span
    itself, as a cached 16-bit WAV; and where the span begins in it (seconds)."""
    info = sf.info(str(source_file))
    sr = info.samplerate
    a = max(0, round((start - pad) * sr))
    b = min(info.frames, round((stop + pad) * sr))
    dest = cache_dir(output_dir) / f"ctx-{_key(source_file, a, b)}.wav"
    if not dest.is_file():
        audio, _ = sf.read(str(source_file), start=a, stop=max(a, b), dtype="float32")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            sf.write(str(tmp), audio, sr, subtype="PCM_16", format="WAV")
    return dest, start - a / sr


def cut(output_dir: Path, source_file: Path, offset: float, seconds: float) -> Path:
    """``seconds`` of ``source_file`` from ``offset``, as a cached 16-bit WAV."""
    return context(output_dir, source_file, offset, offset + seconds, 0.0)[0]
