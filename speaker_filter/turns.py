"""Speaker changes inside a slice: where one voice hands over to another.

The segment stage cuts at pauses longer than ``max_gap`` and at gender changes, so two voices of
one gender taking turns across a short pause share a slice. Here a slice's speech (what
Resemblyzer's VAD keeps, as its embeddings see it) is embedded in sliding windows: at every
boundary on a 0.25-s grid, the 1.5 s before it and the 1.5 s after it (at least 1 s each; a
window is one pass of the encoder, batched over the slices). Where the two windows' cosine
distance peaks above :data:`CHANGE`, the slice is split at the quietest point of the original
audio within 1 s of speech of that boundary (a pause, when the turn has one), and the
parts stand on their own in the filter. A slice without a change is passed on whole.

Why here and not in the segment stage: the speaker filter already runs the speaker encoder on
every slice, and only a run that keeps one voice needs one voice per slice; the segment stage's
default gender engine (inaSpeechSegmenter) loads no speaker encoder, and a run without a target
voice does not pay for one. A slice that is not split keeps its id; the parts' ids extend it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speaker_filter.cohort import unit

SR = 16000
MEL_HOP = 160  # samples per mel frame (10 ms)
WINDOW = 150  # frames: 1.5-s windows
HOP = 25  # frames: a window every 0.25 s, and a boundary every 0.25 s
MIN_SIDE = 100  # frames: at least 1 s of speech on each side of a change
SPAN = 300  # frames: each side of a boundary is the mean of its windows within 3 s
CHANGE = 0.3  # cosine distance between the two sides: a candidate change of voice
MAX_CHANGES = 2  # candidate changes per slice (host, guest, host)
NEAR = 100  # frames of speech: the cut moves to the quietest point within 1 s of speech
FRAME = 0.01  # seconds per energy frame when looking for the quietest point
MIN_PART = 1.0  # seconds: no part shorter than this (a cut nearer an end is not made)


def window_frames(n: int) -> list[tuple[int, int]]:
    """(start, stop) frames of the windows of a speech of ``n`` mel frames: 1.5 s every
    0.25 s, plus the shorter windows that reach the ends ([0, t] and [t, n] for the boundaries
    less than 1.5 s from an end); none when the speech is shorter than two sides."""
    if n < 2 * MIN_SIDE:
        return []
    out = [(a, a + WINDOW) for a in range(0, n - WINDOW + 1, HOP)]
    for t in boundaries(n):
        if t < WINDOW:
            out.append((0, int(t)))
        if n - t < WINDOW:
            out.append((int(t), n))
    return sorted(set(out))


def boundaries(n: int) -> np.ndarray:
    """Frames where a change may be: every 0.25 s with at least 1 s on each side."""
    return np.arange(MIN_SIDE, n - MIN_SIDE + 1, HOP)


def side(frames: np.ndarray, emb: np.ndarray, lo: int, hi: int) -> np.ndarray | None:
    """The mean (unit) embedding of the windows within frames [lo, hi]; None if none."""
    inside = (frames[:, 0] >= lo) & (frames[:, 1] <= hi)
    return unit(emb[inside].mean(axis=0)) if inside.any() else None


def distance_curve(frames: np.ndarray, emb: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(boundaries, cosine distance between the 3 s of windows before and after each)."""
    ts = boundaries(n)
    d = np.zeros(len(ts))
    for k, t in enumerate(ts):
        a = side(frames, emb, max(0, t - SPAN), t)
        b = side(frames, emb, t, min(n, t + SPAN))
        d[k] = 0.0 if a is None or b is None else 1.0 - float(a @ b)
    return ts, d


def change_points(
    ts: np.ndarray, dist: np.ndarray, threshold: float = CHANGE, most: int = MAX_CHANGES
) -> list[int]:
    """Boundaries (frames) where the voice may change: the peaks of the distance above
    ``threshold``, the highest first, each at least :data:`MIN_SIDE` frames from every one
    taken, at most ``most``."""
    taken: list[int] = []
    for k in np.argsort(-dist, kind="stable"):
        if dist[k] < threshold or len(taken) == most:
            break
        if (k and dist[k - 1] > dist[k]) or (k + 1 < len(dist) and dist[k + 1] > dist[k]):
            continue  # on a slope: the change is at the peak
        t = int(ts[k])
        if all(abs(t - u) >= MIN_SIDE for u in taken):
            taken.append(t)
    return sorted(taken)


def quietest_near(energy: np.ndarray, at: float, lo_s: float, hi_s: float) -> float:
    """Seconds: the middle of the run of quiet frames (within 3 dB of the quietest) of
    ``energy`` (per :data:`FRAME`) between ``lo_s`` and ``hi_s`` nearest ``at``."""
    lo = max(0, round(lo_s / FRAME))
    hi = min(len(energy), round(hi_s / FRAME))
    if hi <= lo:
        return at
    quiet = energy[lo:hi] <= max(float(np.min(energy[lo:hi])) * 2.0, 1e-12)
    best, best_d = at, np.inf
    k = 0
    while k < len(quiet):
        if not quiet[k]:
            k += 1
            continue
        j = k
        while j + 1 < len(quiet) and quiet[j + 1]:
            j += 1
        a, b = (lo + k) * FRAME, (lo + j + 1) * FRAME
        d = 0.0 if a <= at <= b else min(abs(a - at), abs(b - at))
        if d < best_d:
            best, best_d = (a + b) / 2, d
        k = j + 1
    return float(best)


def frame_energy(wav: np.ndarray, sr: int) -> np.ndarray:
    """Mean square of mono ``wav`` per :data:`FRAME`-second frame."""
    hop = max(1, round(FRAME * sr))
    n = len(wav) // hop
    return np.mean(wav[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1)


@dataclass(frozen=True)
class Piece:
    """A candidate part of a slice: seconds into the slice, frames of its speech."""

    start: float
    stop: float
    lo: int
    hi: int


def pieces(
    changes: list[int], frame_time: np.ndarray, energy: np.ndarray, duration: float
) -> list[Piece]:
    """The slice cut at each change (frames of speech; ``frame_time`` gives each frame's
    second in the slice), each cut moved to the quietest point near; [] without a change."""
    if not changes:
        return []
    last = len(frame_time) - 1
    cuts = [
        quietest_near(
            energy,
            float(frame_time[min(t, last)]),
            float(frame_time[max(0, t - NEAR)]),
            float(frame_time[min(last, t + NEAR)]),
        )
        for t in changes
    ]
    kept: list[float] = []
    for c in sorted(cuts):  # every part at least MIN_PART long
        if c - (kept[-1] if kept else 0.0) >= MIN_PART and duration - c >= MIN_PART:
            kept.append(c)
    if not kept:
        return []
    edges = [0.0, *kept, duration]
    # the speech frames on each side of a cut: the first frame at or after it
    frames = [0, *(int(np.searchsorted(frame_time, c)) for c in kept), last]
    return [
        Piece(round(edges[k], 3), round(edges[k + 1], 3), frames[k], frames[k + 1])
        for k in range(len(kept) + 1)
    ]


def groups(n: int) -> list[tuple[int, int]]:
    """(first, last) piece of every run of consecutive pieces shorter than the whole slice:
    the candidate rows of a slice cut in ``n`` pieces."""
    return [(a, b) for a in range(n) for b in range(a, n) if (a, b) != (0, n - 1)]


def full_windows(cache: dict[str, np.ndarray]) -> np.ndarray:
    """The embeddings of a slice's full-length (1.5-s) windows, from its cached analysis."""
    if "win" not in cache or not len(cache["win"]):
        return np.zeros((0, 256), dtype=np.float32)
    f = cache["win_frames"]
    return cache["win"][(f[:, 1] - f[:, 0]) == WINDOW]
