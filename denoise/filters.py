"""Zero-phase filters of the denoise stage (engine ``scipy``): low-pass, high-pass, notches.

Every filter is a Butterworth or notch design in second-order sections (stable at any sample
rate) and is applied forward and backward (``scipy.signal.sosfiltfilt``): no time shift, and
the magnitude response of one application is squared. A filter with ``passes=2`` is applied
zero-phase twice, so its response in dB is four times that of its design.

Design convention: the low-pass and the high-pass lose at most **1 dB** at their cutoff per
design (so at most ``2 × passes`` dB after zero-phase application of all passes) and reach
``attenuation_db`` one octave beyond it (per design; ``2 × passes`` times that in dB after).

Long files go through :func:`filter_file` in blocks with overlap, with memory bounded by one
block whatever the length; the result equals whole-file :func:`apply` to well under -80 dB.
:func:`find_notches` finds the persistent narrow-band peaks (mains hum and its harmonics,
whines) of a whole track, those that are there in its pauses too; :func:`find_lowpass` chooses a
low-pass cutoff from a track's noise floor and speech spectrum, or none when the high band is
clean.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from malmoi.audio import sound_file
from malmoi.files import atomic_path
from malmoi.logs import get_logger
from malmoi.tools import MediaError

log = get_logger(__name__)

PASS_LOSS_DB = 1.0  # loss at the cutoff of one low-/high-pass design
# the overlap of a block (and the padding at a track's ends) is where the L1 norm of what is
# left of the impulse response falls below this fraction of its whole L1 norm
SETTLE_TOLERANCE = 1e-5
MAX_SETTLE_FRAMES = 1 << 25  # a filter that has not settled after this many frames is refused


# --- designs ---------------------------------------------------------------------------------


def _check_below_nyquist(kind: str, freq_hz: float, sample_rate: int) -> float:
    nyquist = sample_rate / 2
    if freq_hz >= nyquist:
        raise ValueError(
            f"{kind} {_hz(freq_hz)} Hz is at or above Nyquist "
            f"({_hz(nyquist)} Hz at {_hz(sample_rate)} Hz)"
        )
    if freq_hz <= 0:
        raise ValueError(f"{kind} {_hz(freq_hz)} Hz must be above 0 Hz")
    return nyquist


def _hz(value: float) -> str:
    return f"{value:g}"


def lowpass_sos(cutoff_hz: float, attenuation_db: float, sample_rate: int) -> np.ndarray:
    """Butterworth low-pass (SOS) losing <= 1 dB at ``cutoff_hz`` and attenuating at least
    ``attenuation_db`` one octave above it (that stop edge is moved below Nyquist when it is
    beyond: to 90% of the way from the cutoff to Nyquist). Order from ``scipy.signal.buttord``.
    ValueError when the cutoff is at or above Nyquist."""
    nyquist = _check_below_nyquist("lowpass cutoff", cutoff_hz, sample_rate)
    stop = min(2.0 * cutoff_hz, cutoff_hz + 0.9 * (nyquist - cutoff_hz))
    order, wn = signal.buttord(cutoff_hz, stop, PASS_LOSS_DB, attenuation_db, fs=sample_rate)
    return signal.butter(order, wn, btype="lowpass", output="sos", fs=sample_rate)


def highpass_sos(cutoff_hz: float, attenuation_db: float, sample_rate: int) -> np.ndarray:
    """Butterworth high-pass (SOS) losing <= 1 dB at ``cutoff_hz`` and attenuating at least
    ``attenuation_db`` one octave below it. ValueError when the cutoff is at or above
    Nyquist."""
    _check_below_nyquist("highpass cutoff", cutoff_hz, sample_rate)
    order, wn = signal.buttord(
        cutoff_hz, cutoff_hz / 2.0, PASS_LOSS_DB, attenuation_db, fs=sample_rate
    )
    return signal.butter(order, wn, btype="highpass", output="sos", fs=sample_rate)


def notch_sos(freq_hz: float, q: float, sample_rate: int) -> np.ndarray:
    """Second-order notch at ``freq_hz`` with quality ``q`` (-3 dB width ``freq_hz / q`` per
    application), ``scipy.signal.iirnotch`` as one SOS. ValueError at or above Nyquist."""
    _check_below_nyquist("notch", freq_hz, sample_rate)
    if q <= 0:
        raise ValueError(f"notch Q {q:g} must be above 0")
    b, a = signal.iirnotch(freq_hz, q, fs=sample_rate)
    return signal.tf2sos(b, a)


def parse_notch(text: str, default_q: float) -> tuple[float, float]:
    """``"6000:30"`` -> ``(6000.0, 30.0)``; ``"60"`` -> ``(60.0, default_q)``. ValueError with
    the text when it is not ``HZ`` or ``HZ:Q`` with positive numbers."""
    freq_text, _, q_text = text.strip().partition(":")
    try:
        freq = float(freq_text)
        q = float(q_text) if q_text else float(default_q)
    except ValueError:
        raise ValueError(f"notch {text!r} is not 'HZ' or 'HZ:Q' (e.g. '6000:30')") from None
    if not (math.isfinite(freq) and math.isfinite(q)) or freq <= 0 or q <= 0:
        raise ValueError(f"notch {text!r}: frequency and Q must be positive numbers")
    return freq, q


@dataclass(frozen=True, eq=False)
class Filter:
    """One step of the chain: ``sos`` applied zero-phase ``passes`` times."""

    name: str  # "lowpass", "highpass", "notch 6000 Hz Q30"
    sos: np.ndarray
    passes: int = 1


def notch_filter(freq_hz: float, q: float, sample_rate: int) -> Filter:
    """A :class:`Filter` named ``"notch 6000 Hz Q30"``."""
    return Filter(f"notch {freq_hz:.4g} Hz Q{q:g}", notch_sos(freq_hz, q, sample_rate))


# --- how long a filter takes to forget ---------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _settle_cached(sos_bytes: bytes, sections: int, tol: float) -> int:
    sos = np.frombuffer(sos_bytes, dtype=np.float64).reshape(sections, 6).copy()
    n = 1 << 12
    while True:
        impulse = np.zeros(n)
        impulse[0] = 1.0
        h = np.abs(signal.sosfilt(sos, impulse))
        tail = np.cumsum(h[::-1])[::-1]  # tail[i] = sum of |h| from i on
        total = tail[0]
        if total > 0 and tail[3 * n // 4] <= 0.1 * tol * total:
            return int(np.argmax(tail <= tol * total))
        if n >= MAX_SETTLE_FRAMES or not np.all(np.isfinite(h)):
            raise ValueError(f"filter does not settle within {MAX_SETTLE_FRAMES} frames")
        n *= 4


def settle_frames(sos: np.ndarray, tol: float = SETTLE_TOLERANCE) -> int:
    """Frames after which the impulse response of ``sos`` has less than ``tol`` of its L1
    norm left. The L1 tail bounds what a signal before (or after) that point can still change,
    however it lines up with the response (a hum exactly at a notch adds up coherently, so the
    envelope of the response alone is not enough)."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    return _settle_cached(sos.tobytes(), sos.shape[0], tol)


def _cascade(filters: Sequence[Filter]) -> np.ndarray:
    return np.vstack([f.sos for f in filters for _ in range(2 * f.passes)])


def overlap_frames(filters: Sequence[Filter], tol: float = SETTLE_TOLERANCE) -> int:
    """The context :func:`filter_file` reads on each side of a block: where the impulse
    response of the whole chain — every filter, every pass, forward and backward, cascaded —
    has less than ``tol`` of its L1 norm left (and at least each filter's own end padding)."""
    if not filters:
        return 0
    own = max(settle_frames(f.sos, tol) for f in filters)
    return max(settle_frames(_cascade(filters), tol), own)


# --- applying ----------------------------------------------------------------------------------


def _filtfilt(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Zero-phase ``sos`` along axis 0, the ends padded (odd extension) with as much signal as
    the filter needs to settle (at most the signal's length - 1)."""
    padlen = min(x.shape[0] - 1, settle_frames(sos))
    return signal.sosfiltfilt(sos, x, axis=0, padtype="odd", padlen=padlen)


def apply(audio: np.ndarray, filters: Sequence[Filter]) -> np.ndarray:
    """Apply each filter zero-phase ``passes`` times, in order, to ``audio`` ((frames,
    channels) or (frames,), in memory: slices and blocks up to a few minutes); float64 inside,
    float32 out, same shape."""
    x = np.asarray(audio, dtype=np.float64)
    if x.shape[0] < 2 or not filters:
        return x.astype(np.float32)
    for f in filters:
        for _ in range(f.passes):
            x = _filtfilt(x, f.sos)
    return x.astype(np.float32)


def filter_file(
    src: Path, dest: Path, filters: Sequence[Filter], block_seconds: float = 60.0
) -> None:
    """Filter the audio file ``src`` (any length, any format soundfile reads) with ``filters``
    as :func:`apply` would on the whole file, and write ``dest`` (32-bit float WAV, RF64 past
    2 GB, atomically), reading ``block_seconds`` at a time.

    Each block is filtered with :func:`overlap_frames` of real signal on each side (the frames
    after which the cascaded impulse response of all filters and passes keeps less than 1e-5 of
    its L1 norm), then only its middle is written: memory is bounded by one block plus two
    overlaps, and the result equals whole-file :func:`apply` to far below -80 dB.
    MediaError when ``src`` cannot be read."""
    import soundfile as sf

    try:
        fin = sf.SoundFile(str(src))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise MediaError(f"{src}: cannot read audio: {str(exc).splitlines()[0]}") from None
    with fin:
        sr, n, ch = fin.samplerate, fin.frames, fin.channels
        block = max(1, round(block_seconds * sr))
        overlap = overlap_frames(filters)
        fmt = "WAV" if n * ch * 4 < 2**31 else "RF64"
        log.debug("filter %s: %d frames, blocks of %d, overlap %d", src, n, block, overlap)
        with (
            atomic_path(dest, suffix=".wav") as tmp,
            sound_file(tmp, "w", samplerate=sr, channels=ch, subtype="FLOAT", format=fmt) as fout,
        ):
            for start in range(0, n, block):
                stop = min(n, start + block)
                lo, hi = max(0, start - overlap), min(n, stop + overlap)
                fin.seek(lo)
                x = fin.read(hi - lo, dtype="float64", always_2d=True)
                if x.shape[0] != hi - lo:
                    raise MediaError(f"{src}: ended after {lo + x.shape[0]} of {n} frames")
                fout.write(apply(x, filters)[start - lo : stop - lo])


# --- finding notches ---------------------------------------------------------------------------

RESOLUTION_HZ = 1.5  # Welch frame: the power of two giving at most this bin width
MAX_SEGMENTS = 128  # the track's spectrum is the median of at most about this many segments
PERSISTENT_PERCENTILE = 35.0  # the track's spectrum: this percentile over segments (65% have it)
MIN_FRAMES = 16  # fewer frames (6-9 s) cannot tell a persistent peak from a passing one
GUARD_BINS = 3  # a Hann peak's main lobe: bins left out of its surroundings
SURROUND_HZ = 30.0  # the surroundings of a peak: this far on each side (beyond the guard)
MAX_WIDTH_HZ = 8.0  # a peak wider than this 6 dB below its top is not narrow
MIN_NOTCH_HZ = 40.0  # below: rumble, the high-pass's business
READ_FRAMES = 1 << 20
PAUSE_FRACTION = 0.2  # a track's pauses: its quietest fifth of short frames
PAUSE_RESOLUTION_HZ = 5.5  # pause frames: the power of two giving at most this bin width
PAUSE_PROMINENCE_DB = 6.0  # a peak must stand this far above its surroundings in the pauses
PAUSE_REACH_HZ = 30.0  # the surroundings of a peak in the pauses' coarser spectrum


def _frame_length(sample_rate: int) -> int:
    return 1 << math.ceil(math.log2(sample_rate / RESOLUTION_HZ))


def _mono_blocks(path_or_audio: Path | str | np.ndarray, sample_rate: int | None):
    """(sample_rate, total frames, iterator of mono float64 blocks)."""
    if isinstance(path_or_audio, str | Path):
        import soundfile as sf

        path = Path(path_or_audio)
        try:
            fh = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise MediaError(f"{path}: cannot read audio: {str(exc).splitlines()[0]}") from None

        def blocks():
            with fh:
                for b in fh.blocks(READ_FRAMES, dtype="float64", always_2d=True):
                    yield b.mean(axis=1)

        return fh.samplerate, fh.frames, blocks()
    if sample_rate is None:
        raise ValueError("find_notches: sample_rate is required with an array")
    audio = np.asarray(path_or_audio)
    mono = audio if audio.ndim == 1 else audio.mean(axis=1)
    return sample_rate, len(mono), iter([mono.astype(np.float64)])


def _segment_spectra(blocks, frames_total: int, nperseg: int) -> np.ndarray:
    """Power spectra (segments, bins): Hann frames with half overlap, averaged in consecutive
    groups so that there are about MAX_SEGMENTS segments (at least one frame each)."""
    hop = nperseg // 2
    n_frames = max(1, (frames_total - nperseg) // hop + 1)
    per_segment = max(1, math.ceil(n_frames / MAX_SEGMENTS))
    window = signal.get_window("hann", nperseg)
    segments: list[np.ndarray] = []
    acc = np.zeros(nperseg // 2 + 1)
    count = 0
    buf = np.zeros(0)
    for block in blocks:
        buf = np.concatenate([buf, block])
        while len(buf) >= nperseg:
            frame = buf[:nperseg]
            acc += np.abs(np.fft.rfft((frame - frame.mean()) * window)) ** 2
            count += 1
            if count == per_segment:
                segments.append(acc / count)
                acc, count = np.zeros_like(acc), 0
            buf = buf[hop:]
    if count:
        segments.append(acc / count)
    if not segments and len(buf):  # shorter than one frame: one zero-padded frame
        frame = np.zeros(nperseg)
        frame[: len(buf)] = (buf - buf.mean()) * signal.get_window("hann", len(buf))
        segments.append(np.abs(np.fft.rfft(frame)) ** 2)
    return np.array(segments)


def _surroundings_db(db: np.ndarray, guard: int, reach: int) -> np.ndarray:
    """For each bin, the higher of the medians of the bins ``guard+1 .. guard+reach`` to its
    left and to its right (edges reflected): what a peak there must stand above."""
    from numpy.lib.stride_tricks import sliding_window_view

    pad = guard + reach
    padded = np.pad(db, pad, mode="reflect")
    windows = sliding_window_view(padded, reach)  # windows[i] = padded[i : i + reach]
    n = len(db)
    left = np.median(windows[0:n], axis=1)  # padded[k : k + reach] = db[k - pad : k - guard]
    right = np.median(windows[pad + guard + 1 : pad + guard + 1 + n], axis=1)
    return np.maximum(left, right)


def find_notches(
    path_or_audio: Path | str | np.ndarray,
    sample_rate: int | None = None,
    *,
    q: float = 30.0,
    max_notches: int = 8,
    min_prominence_db: float = 10.0,
) -> list[float]:
    """Frequencies (Hz, strongest first) of the persistent narrow-band peaks of a whole track:
    mains hum and its harmonics, whines. Reads a file (streamed, channels mixed to mono) or an
    array with its ``sample_rate``.

    The track's spectrum is the median over time segments of Welch spectra (Hann frames of
    at most 1.5 Hz bins, half overlap), so only what is present in most segments remains (a
    speech harmonic moves and does not). A peak counts when it stands ``min_prominence_db``
    above its surroundings (the higher of the median levels 3 bins to 30 Hz away on either
    side) and is narrow (under 8 Hz wide 6 dB below its top); of peaks closer than
    ``freq / q`` the stronger is kept. Frequencies are refined by parabolic interpolation of the
    log spectrum. A peak is kept only when it is also in the track's **pauses** (its quietest
    fifth of 0.19-s frames, where it must stand 6 dB above the spectrum around it in at least
    half of them):
    hum and whines are there all the time, a voice's pitch and harmonics, however steady, are
    not. A track of fewer than 16 frames (6-9 s) gives [] (nothing can be called persistent in
    it), and so does clean speech."""
    sr, total, blocks = _mono_blocks(path_or_audio, sample_rate)
    nperseg = _frame_length(sr)
    if max_notches <= 0 or total < nperseg + (MIN_FRAMES - 1) * (nperseg // 2):
        log.debug("find_notches: %d frames at %d Hz is too short to tell", total, sr)
        return []
    spectra = _segment_spectra(blocks, total, nperseg)
    power = np.percentile(spectra, PERSISTENT_PERCENTILE, axis=0)
    floor = max(float(power.max()), 1e-300) * 1e-15
    db = 10 * np.log10(power + floor)
    bin_hz = sr / nperseg
    reach = max(2, round(SURROUND_HZ / bin_hz))
    surroundings = _surroundings_db(db, GUARD_BINS, reach)
    lo = max(1, math.ceil(MIN_NOTCH_HZ / bin_hz))
    hi = min(len(db) - 2, int(0.95 * (sr / 2) / bin_hz))
    max_width = MAX_WIDTH_HZ / bin_hz
    found: list[tuple[float, float]] = []  # (prominence, frequency)
    for k in signal.find_peaks(db)[0]:
        if not lo <= k <= hi:
            continue
        a, b, c = db[k - 1], db[k], db[k + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom < 0 else 0.0
        top = b - 0.25 * (a - c) * offset  # the parabola's vertex: a tone between two bins
        if top - surroundings[k] < min_prominence_db:
            continue
        left = right = k
        while left > 0 and db[left - 1] > db[k] - 6 and k - left <= max_width:
            left -= 1
        while right < len(db) - 1 and db[right + 1] > db[k] - 6 and right - k <= max_width:
            right += 1
        if right - left + 1 > max_width:
            continue
        found.append((float(top - surroundings[k]), (k + offset) * bin_hz))
    if found:
        in_pauses = _pause_prominence_db(path_or_audio, sample_rate, [f for _, f in found])
        kept = [pf for pf, db in zip(found, in_pauses, strict=True) if db >= PAUSE_PROMINENCE_DB]
        if len(kept) < len(found):
            log.debug(
                "find_notches: not in the pauses, left out: %s Hz",
                ", ".join(f"{f:.1f}" for p, f in found if (p, f) not in kept),
            )
        found = kept
    chosen: list[float] = []
    for _, freq in sorted(found, reverse=True):
        if all(abs(freq - f) > max(f / q, 2 * bin_hz) for f in chosen):
            chosen.append(round(freq, 2))
        if len(chosen) == max_notches:
            break
    return chosen


# --- what is in the pauses ---------------------------------------------------------------------


def _short_frames(path_or_audio: Path | str | np.ndarray, sample_rate: int | None, nperseg: int):
    """(sample_rate, iterator of Hann-windowed power spectra of ``nperseg`` frames with half
    overlap), read in blocks."""
    sr, _, blocks = _mono_blocks(path_or_audio, sample_rate)
    window = signal.get_window("hann", nperseg)
    hop = nperseg // 2

    def spectra():
        buf = np.zeros(0)
        for block in blocks:
            buf = np.concatenate([buf, block])
            count = max(0, (len(buf) - nperseg) // hop + 1)
            if count:
                idx = np.arange(nperseg)[None, :] + hop * np.arange(count)[:, None]
                frames = buf[idx]
                frames = frames - frames.mean(axis=1, keepdims=True)
                yield np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
                buf = buf[hop * count :]

    return sr, spectra()


def _pause_prominence_db(
    path_or_audio: Path | str | np.ndarray, sample_rate: int | None, freqs: Sequence[float]
) -> list[float]:
    """How far each of ``freqs`` stands above its surroundings in a track's **pauses** — its
    quietest ``PAUSE_FRACTION`` of frames of about 0.19 s (bins of at most 5.5 Hz) — in dB: per
    pause frame, the top within a bin of the frequency (a local maximum: not the skirt of a
    line beside it) minus the higher of the medians 3 bins to 30 Hz away on either side; then
    the median over the pause frames (a peak in only some of them, a voice's pitch in a weak
    syllable, does not count). Two passes: the frames' levels, then the pause frames."""
    sr, _, _ = _mono_blocks(path_or_audio, sample_rate)
    nperseg = 1 << math.ceil(math.log2(sr / PAUSE_RESOLUTION_HZ))
    bin_hz = sr / nperseg
    _, first = _short_frames(path_or_audio, sample_rate, nperseg)
    levels = np.concatenate([spec.sum(axis=1) for spec in first] or [np.zeros(0)])
    if not len(levels):
        return [-math.inf] * len(freqs)
    threshold = np.quantile(levels, PAUSE_FRACTION)
    reach = max(2, round(PAUSE_REACH_HZ / bin_hz) - 2)
    prominences: list[list[np.ndarray]] = [[] for _ in freqs]
    _, second = _short_frames(path_or_audio, sample_rate, nperseg)
    for spec in second:
        quiet = spec[spec.sum(axis=1) <= threshold]
        if not len(quiet):
            continue
        floor = max(float(spec.max()), 1e-300) * 1e-15
        db = 10 * np.log10(quiet + floor)
        for i, freq in enumerate(freqs):
            k = round(freq / bin_hz)
            if not 2 < k < db.shape[1] - 3:
                continue
            near = db[:, k - 1 : k + 2]
            top = near.max(axis=1)
            # the top must be a peak of its own, not the skirt of a stronger line beside it
            at = k - 1 + near.argmax(axis=1)
            rows = np.arange(len(db))
            own = (top >= db[rows, at - 1]) & (top >= db[rows, at + 1])
            top = np.where(own, top, -np.inf)
            left = db[:, max(0, k - 2 - reach) : k - 2]
            right = db[:, k + 3 : k + 3 + reach]
            sides = [np.median(x, axis=1) for x in (left, right) if x.shape[1]]
            prominences[i].append(top - np.max(sides, axis=0))
    return [float(np.median(np.concatenate(p))) if p else -math.inf for p in prominences]


# --- choosing a low-pass cutoff ----------------------------------------------------------------

LOWPASS_BAND_HZ = 500.0  # the spectrum is judged in bands this wide
LOWPASS_FRAME_S = 0.04  # frames of about 40 ms, half overlap
VOICE_BAND_HZ = (300.0, 3000.0)  # frames are ranked by their power here, where speech leads
QUIET_FRACTION = 0.2  # the noise: the median of the quietest fifth of frames
LOUD_FRACTION = 0.3  # the speech: the median of the loudest 30% of frames, less the noise
STEADY_DB = 17.0  # noise that leads holds its level: the bands' 90th percentile within this of 10th
NEGLIGIBLE_DB = 60.0  # noise this far below the speech (all bands) is not worth a filter


def find_lowpass(
    path_or_audio: Path | str | np.ndarray,
    sample_rate: int | None = None,
    *,
    min_snr_db: float = 0.0,
    min_hz: float = 4000.0,
) -> float | None:
    """The low-pass cutoff (Hz) a track needs, or None when its high band is clean. Reads a
    file (streamed, channels mixed to mono) or an array with its ``sample_rate``.

    The rule: in ~40-ms frames, each 500-Hz band's power is the median of its bins (a whine
    is one bin: the notch's business, not the low-pass's). Frames are ranked by their power
    from 300 Hz to 3 kHz, where speech leads. The **noise** in a band is its median over the
    quietest fifth of frames (the pauses: hiss, crackle), the **speech** its median over the
    loudest 30% less that noise (medians: impulsive crackle cancels out). The cutoff is the
    lowest band edge at or above ``min_hz`` from which up (sums over every band above the edge)
    the speech stands less than ``min_snr_db`` above the noise **and** the level is steady (the
    90th percentile over frames within 17 dB of the 10th: hiss 2-9 dB, crackle about 15 dB;
    speech, whose fricatives come and go, 19 dB and more even without pauses), unless that
    noise is 60 dB or more below the speech of all bands (nothing worth filtering). Clean
    speech, and speech whose noise is below the high band (hum), gets None: full bandwidth."""
    sr, _, _ = _mono_blocks(path_or_audio, sample_rate)
    nperseg = 1 << math.ceil(math.log2(LOWPASS_FRAME_S * sr))
    freqs = np.fft.rfftfreq(nperseg, 1 / sr)
    edges = np.arange(0.0, sr / 2, LOWPASS_BAND_HZ)
    bands = [np.flatnonzero((freqs >= lo) & (freqs < lo + LOWPASS_BAND_HZ)) for lo in edges]
    keep = [i for i, b in enumerate(bands) if len(b) >= 3]
    edges = edges[keep]
    bands = [bands[i] for i in keep]
    _, spectra = _short_frames(path_or_audio, sample_rate, nperseg)
    per_frame = [
        np.stack([np.median(spec[:, b], axis=1) for b in bands], axis=1) for spec in spectra
    ]
    if not per_frame or sum(len(x) for x in per_frame) < 10:
        log.debug("find_lowpass: too short to tell")
        return None
    power = np.concatenate(per_frame)  # (frames, bands)
    voice = (edges + LOWPASS_BAND_HZ > VOICE_BAND_HZ[0]) & (edges < VOICE_BAND_HZ[1])
    order = np.argsort(power[:, voice].sum(axis=1))
    n = len(order)
    noise = np.median(power[order[: max(1, round(QUIET_FRACTION * n))]], axis=0)
    loud = np.median(power[order[n - max(1, round(LOUD_FRACTION * n)) :]], axis=0)
    speech = np.maximum(loud - noise, 0.0)
    low, high = np.percentile(power, [10, 90], axis=0)
    total_speech = float(speech.sum())
    if total_speech <= 0:
        return None
    for i, lo in enumerate(edges):
        if lo < min_hz:
            continue
        s_above, n_above = float(speech[i:].sum()), float(noise[i:].sum())
        if n_above < total_speech * 10 ** (-NEGLIGIBLE_DB / 10):
            return None  # from here up there is no noise worth a filter
        steady = float(high[i:].sum()) < float(low[i:].sum()) * 10 ** (STEADY_DB / 10)
        if steady and s_above < n_above * 10 ** (min_snr_db / 10):
            log.debug(
                "find_lowpass: %g Hz and up, speech %.1f dB above the noise",
                lo,
                10 * math.log10(max(s_above, 1e-300) / n_above),
            )
            return float(lo)
    return None
