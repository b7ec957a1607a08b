"""Generated "episodes" for evaluating the speaker filter: utterances of several speakers joined
with short pauses, the truth (who speaks when) beside them, and time-based precision/recall of a
run's kept slices against that truth.

Used by the turn-taking and dominant-voice tests (``tests/test_speaker_cases.py``); a bench or
the README can build the same cases."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from malmoi.audio import read_audio

EPISODE_SR = 44100  # the pipeline's WAVs (what the segment stage reads after separate)


@dataclass(frozen=True)
class Turn:
    """One utterance placed in an episode: who, from which clip, and where (seconds)."""

    speaker: str
    start: float
    stop: float
    clip: str


def make_episode(
    turns: Sequence[tuple[str, Path]],
    pauses: tuple[float, float],
    rng: np.random.Generator,
    sr: int = EPISODE_SR,
    lead: float = 0.5,
) -> tuple[np.ndarray, int, list[Turn]]:
    """Join the clips of ``turns`` ((speaker, audio file) in order, each decoded to mono at
    ``sr``), with a silence drawn uniformly from ``pauses`` (low, high seconds) between two
    turns and ``lead`` seconds of silence at both ends. Returns the float32 audio, ``sr`` and
    the truth: one :class:`Turn` per clip (its whole clip's span, the clip's own leading and
    trailing silence included)."""
    lo, hi = pauses
    if not 0 <= lo <= hi:
        raise ValueError(f"pauses must be 0 <= low <= high, got {pauses}")
    parts: list[np.ndarray] = [np.zeros(round(lead * sr), dtype=np.float32)]
    truth: list[Turn] = []
    at = len(parts[0])
    for k, (speaker, clip) in enumerate(turns):
        if k:
            gap = np.zeros(round(float(rng.uniform(lo, hi)) * sr), dtype=np.float32)
            parts.append(gap)
            at += len(gap)
        audio = read_audio(Path(clip), sr)
        parts.append(audio)
        truth.append(Turn(str(speaker), at / sr, (at + len(audio)) / sr, Path(clip).name))
        at += len(audio)
    parts.append(np.zeros(round(lead * sr), dtype=np.float32))
    return np.concatenate(parts).astype(np.float32), sr, truth


def write_truth(truth: Iterable[Turn], path: Path) -> Path:
    """The truth as a CSV (speaker, start, stop, clip)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["speaker", "start", "stop", "clip"])
        for t in truth:
            w.writerow([t.speaker, f"{t.start:.4f}", f"{t.stop:.4f}", t.clip])
    return path


def overlap_by_speaker(start: float, stop: float, truth: Iterable[Turn]) -> dict[str, float]:
    """Seconds of [start, stop] that fall in each speaker's turns (pauses count for nobody)."""
    out: dict[str, float] = {}
    for t in truth:
        o = min(stop, t.stop) - max(start, t.start)
        if o > 0:
            out[t.speaker] = out.get(t.speaker, 0.0) + o
    return out


@dataclass(frozen=True)
class TimeScores:
    """Precision and recall on time of the kept slices for one target speaker."""

    target_kept: float  # seconds of the target's turns inside kept slices
    other_kept: float  # seconds of other speakers' turns inside kept slices
    pause_kept: float  # seconds of kept slices outside every turn
    target_total: float  # seconds of the target's turns in the episode

    @property
    def precision(self) -> float:
        """Target time / speech time kept (pauses excluded); 0 when nothing was kept."""
        speech = self.target_kept + self.other_kept
        return self.target_kept / speech if speech else 0.0

    @property
    def recall(self) -> float:
        return self.target_kept / self.target_total if self.target_total else 0.0


def time_scores(
    kept: Iterable[Mapping[str, Any]], truth: Sequence[Turn], target: str
) -> TimeScores:
    """Time precision/recall of ``kept`` rows (with ``start``/``stop`` seconds into the
    episode) for ``target``, by overlap with the truth turns."""
    tgt = oth = pause = 0.0
    for row in kept:
        a, b = float(row["start"]), float(row["stop"])
        by = overlap_by_speaker(a, b, truth)
        tgt += by.get(target, 0.0)
        oth += sum(v for s, v in by.items() if s != target)
        pause += max(0.0, (b - a) - sum(by.values()))
    total = sum(t.stop - t.start for t in truth if t.speaker == target)
    return TimeScores(tgt, oth, pause, total)
