"""From a segment table to utterance slices.

1. Keep the speech segments of the wanted labels and merge neighbours of the same label whose
   gap is at most ``max_gap`` (word pauses come out of the segmenter as short ``noEnergy``).
2. Pad each region by ``padding`` on both sides, never into the neighbouring region.
3. Split regions longer than ``max_duration`` at their quietest point (the lowest short-time
   energy between ``min_duration`` from either end), not at a fixed length, until every piece
   fits. Pieces share their split points: nothing is lost or doubled.
4. Pieces shorter than ``min_duration`` are returned as rejected, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SPEECH_LABELS = ("speech", "male", "female")


@dataclass(frozen=True)
class Segment:
    label: str
    start: float
    stop: float

    @property
    def duration(self) -> float:
        return self.stop - self.start


@dataclass(frozen=True)
class SliceParams:
    labels: tuple[str, ...]  # the speech labels to keep
    min_duration: float = 1.0
    max_duration: float = 15.0
    max_gap: float = 0.5
    padding: float = 0.1


def speech_regions(
    segments: Sequence[Segment], labels: Sequence[str], max_gap: float
) -> list[Segment]:
    """Merge runs of same-label speech separated by at most ``max_gap`` seconds."""
    regions: list[Segment] = []
    for seg in segments:
        if seg.label not in labels or seg.duration <= 0:
            continue
        last = regions[-1] if regions else None
        if last and last.label == seg.label and seg.start - last.stop <= max_gap + 1e-9:
            regions[-1] = Segment(last.label, last.start, seg.stop)
        else:
            regions.append(seg)
    return regions


def pad(regions: list[Segment], padding: float, duration: float) -> list[Segment]:
    """Widen each region by ``padding``, stopping halfway to a neighbour and at the file ends."""
    out = []
    for i, r in enumerate(regions):
        lo = 0.0 if i == 0 else (regions[i - 1].stop + r.start) / 2
        hi = duration if i == len(regions) - 1 else (r.stop + regions[i + 1].start) / 2
        out.append(Segment(r.label, max(lo, r.start - padding), min(hi, r.stop + padding)))
    return out


def split_quietest(
    region: Segment,
    max_duration: float,
    min_duration: float,
    energy: Callable[[float, float], np.ndarray],
    frame: float,
) -> list[Segment]:
    """Cut ``region`` into pieces no longer than ``max_duration`` at low-energy frames.

    ``energy(start, stop)`` gives the short-time energy of frames of ``frame`` seconds.
    """
    pieces = []
    start = region.start
    while region.stop - start > max_duration:
        lo = start + min(min_duration, max_duration / 2)
        hi = min(start + max_duration, region.stop - min(min_duration, max_duration / 2))
        if hi <= lo:
            hi = start + max_duration
        cut = lo + _quietest(energy(lo, hi)) * frame if hi - lo >= frame else (lo + hi) / 2
        cut = min(max(cut, lo), hi)
        pieces.append(Segment(region.label, start, cut))
        start = cut
    pieces.append(Segment(region.label, start, region.stop))
    return pieces


def _quietest(e: np.ndarray, tolerance: float = 2.0) -> float:
    """Where to cut, in frames: the middle of the latest run of frames within ``tolerance`` ×
    the minimum energy (3 dB), so slices come out as long as the pauses allow."""
    quiet = e <= max(float(np.min(e)) * tolerance, 1e-12)
    last = int(np.flatnonzero(quiet)[-1])
    first = last
    while first > 0 and quiet[first - 1]:
        first -= 1
    return (first + last + 1) / 2


def make_slices(
    segments: Sequence[Segment],
    params: SliceParams,
    duration: float,
    energy: Callable[[float, float], np.ndarray],
    frame: float = 0.01,
) -> tuple[list[Segment], list[tuple[Segment, str]]]:
    """Kept slices and rejected (slice, reason) pairs, in time order."""
    regions = pad(speech_regions(segments, params.labels, params.max_gap), params.padding, duration)
    kept: list[Segment] = []
    rejected: list[tuple[Segment, str]] = []
    for region in regions:
        for piece in split_quietest(
            region, params.max_duration, params.min_duration, energy, frame
        ):
            if piece.duration < params.min_duration:
                rejected.append((piece, f"shorter than min_duration {params.min_duration:g} s"))
            else:
                kept.append(piece)
    return kept, rejected


def frame_energy(
    audio: np.ndarray, sample_rate: int, frame: float = 0.01
) -> Callable[[float, float], np.ndarray]:
    """``energy(start, stop)`` over a mono signal: mean square per ``frame``-second frame."""
    hop = max(1, int(frame * sample_rate))

    def energy(start: float, stop: float) -> np.ndarray:
        a, b = int(start * sample_rate), int(stop * sample_rate)
        x = audio[a:b].astype(np.float64)
        n = len(x) // hop
        return np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) if n else np.zeros(0)

    return energy
