"""Slices that follow the voice: the kept slices of one track joined across short pauses.

The segment stage cuts at every pause longer than its ``max_gap`` (0.5 s), and read or spoken
speech pauses 0.7-1 s inside a sentence, so one utterance of the target often comes out as two or
three kept slices. Once the speaker filter has judged them, consecutive kept slices of one track
are one voice going on: they are joined, pause and all, when the pause is at most ``max_gap``,
nothing else lies in it (a slice of another voice, a rejected piece of the segment stage, a part
cut away where the voice changed) and the joined slice stays within ``max_duration``.

Reads the track (the segment stage's input, found through the stage folders' records) for the
audio of the pauses; :func:`runs` is the rule, free of files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malmoi.manifest import MANIFEST, REJECTED, read_record, read_records


@dataclass(frozen=True)
class Span:
    """A row on its track's time line (seconds)."""

    id: str
    start: float
    stop: float


def runs(
    kept: Sequence[Span],
    blockers: Sequence[tuple[float, float]],
    max_gap: float,
    max_duration: float,
) -> list[list[Span]]:
    """The runs of two or more of ``kept`` (one track's kept rows) to join: consecutive in time,
    each starting at most ``max_gap`` seconds after the one before stops, no ``blockers``
    interval (start, stop) reaching into the pause between them, and the run no longer than
    ``max_duration`` from its first start to its last stop."""
    out: list[list[Span]] = []
    current: list[Span] = []
    for span in sorted(kept, key=lambda s: (s.start, s.stop)):
        if current and _joins(current, span, blockers, max_gap, max_duration):
            current.append(span)
            continue
        if len(current) > 1:
            out.append(current)
        current = [span]
    if len(current) > 1:
        out.append(current)
    return out


def _joins(
    current: list[Span],
    span: Span,
    blockers: Sequence[tuple[float, float]],
    max_gap: float,
    max_duration: float,
) -> bool:
    last = current[-1]
    lo, hi = last.stop, span.start
    if hi - lo > max_gap or span.stop - current[0].start > max_duration:
        return False
    return not any(a < max(hi, lo + 1e-6) and b > lo for a, b in blockers)


def joined_id(first_id: str, count: int) -> str:
    """The id of a join: its first slice's id and how many slices follow it (``X.0013+1``)."""
    return f"{first_id}+{count - 1}"


def tracks(folders: Sequence[Path]) -> tuple[dict[str, Path], dict[str, list[tuple[float, float]]]]:
    """What the slice folders ``folders`` (the segment stage's) were cut from: the track files
    by id (from the folders their ``stage.json`` names as inputs), and each track's rejected
    pieces (start, stop) from their ``rejected.csv``."""
    paths: dict[str, Path] = {}
    rejected: dict[str, list[tuple[float, float]]] = {}
    for folder in folders:
        for inp in read_record(folder).get("inputs", []):
            if not isinstance(inp, str):
                continue
            src = (folder / inp).resolve()
            for rec in read_records(src / MANIFEST):
                paths.setdefault(str(rec["id"]), src / str(rec["path"]))
        for rec in read_records(folder / REJECTED):
            if rec.get("start") not in (None, "") and rec.get("stop") not in (None, ""):
                rejected.setdefault(str(rec.get("parent_id") or ""), []).append(
                    (float(rec["start"]), float(rec["stop"]))
                )
    return paths, rejected


def track_path(rec: dict[str, Any], paths: dict[str, Path]) -> Path | None:
    """The file of ``rec``'s track: from a stage folder's manifest, or the source itself when
    the segment stage read a file on disk; None when neither is there."""
    found = paths.get(str(rec.get("parent_id") or ""))
    if found is not None and found.is_file():
        return found
    source = Path(str(rec.get("source") or ""))
    return source if str(source) and source.is_file() else None
