"""The slices of a build as the review page shows them: one entry per slice, kept and rejected.

The tables of the stages from ``segment`` on (``<output_dir>/<stage>/manifest.csv`` and
``rejected.csv``) are read in pipeline order. A slice keeps its entry through the stages: a
row with the same id, or the one row a later stage made from it (``parent_id``: denoise names
its output ``<id>.denoised``), continues it, the latest stage's row winning; a speaker filter's
part (``part_of``) or join (``joined``) is a slice of its own. The stage that decided a slice
is the latest one it appears in (rejected there: with the reason). A later stage's row of a
slice an earlier stage rejected is stale (left from an earlier run) and is left out — but for
export's: export honours the review, which may keep a slice a filter rejected.

Each entry carries its scores (the latest row with a value in the column), its origin
(:class:`malmoi.lineage.Lineage`), its *doubt* — how near it lies to the threshold that
decided it (:func:`doubt`) — and the review decision (:mod:`review.decisions`) overlaid, under
its current id or any id it had before.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malmoi.audio import as_float
from malmoi.errors import ItemError
from malmoi.folders import config_of
from malmoi.lineage import Lineage
from malmoi.manifest import MANIFEST, REJECTED, read_records
from review import decisions
from review.decisions import Decision
from transcribe.subtitles import SubtitleText

FIRST_STAGE = "segment"  # slices begin here
REVIEWED = "export"  # honours the review: may export a slice an earlier stage rejected
REVIEW = "review"  # export's text_source of an edited text (export.review.TEXT_SOURCE)
IN_REVIEW = "rejected in review"  # export's reason for a slice rejected in review
SORTS = ("order", "doubt", "-doubt", "duration", "-duration", "id")
REVIEWS = ("keep", "reject", "edited", "reviewed", "none")
MAX_LIMIT = 500

# the columns shown as scores (the latest row of the slice with a value in each)
SCORES = (
    "duration",
    "gender",
    "similarity",
    "score",
    "self_similarity",
    "threshold",
    "snr_db_before",
    "snr_db_after",
    "dnsmos_ovrl_before",
    "dnsmos_ovrl_after",
    "snr_db",
    "dnsmos_ovrl",
    "language",
    "language_prob",
    "cer",
    "chars_per_second",
    "speech_seconds",
    "avg_logprob",
    "no_speech_prob",
    "split",
)
TEXTS = ("text", "text_source", "asr_text", "subtitle_text")


def number(value: Any) -> float | None:
    """A cell as a finite float (None: empty, not a number)."""
    out = as_float(value)
    return out if out is not None and math.isfinite(out) else None


def reason_kind(reason: str) -> str:
    """A reason without its figures and ids, to group slices by (``self_similarity 0.70
    below threshold 0.85 (auto: …)`` → ``self_similarity below threshold``)."""
    if not reason:
        return ""
    if reason.startswith("joined into "):
        return "joined into a longer slice"
    head = reason.split(" (")[0].split(": ")[0]
    head = re.sub(r"[-+]?\d+(?:\.\d+)?(?:\s*(?:s|dB|Hz|%|characters/s))?", " ", head)
    head = re.sub(r"\s*[≥≤<>=]+\s*", " ", head)
    return " ".join(head.split()) or reason


@dataclass
class Step:
    """A slice's row in one stage."""

    stage: str
    status: str  # kept | rejected
    row: dict[str, Any]


@dataclass
class Entry:
    """One slice: its rows through the stages, earliest first."""

    ids: list[str]
    steps: list[Step] = field(default_factory=list)
    order: int = 0
    source_id: str = ""
    origin_url: str = ""
    origin_title: str = ""
    doubt: float | None = None
    doubt_note: str = ""
    review: Decision | None = None
    haystack: str = ""
    span_text: str = ""  # no stage wrote a text: the subtitles of its span, if any

    @property
    def id(self) -> str:
        return self.ids[-1]

    @property
    def last(self) -> Step:
        return self.steps[-1]

    @property
    def stage(self) -> str:
        return self.last.stage

    @property
    def status(self) -> str:
        return self.last.status

    @property
    def reason(self) -> str:
        return str(self.last.row.get("reason") or "") if self.status == "rejected" else ""

    def value(self, column: str) -> Any:
        """The latest row's value of ``column`` (None when no row of the slice has one)."""
        for step in reversed(self.steps):
            v = step.row.get(column)
            if v not in (None, ""):
                return v
        return None

    def row_of(self, stage: str) -> dict[str, Any] | None:
        for step in self.steps:
            if step.stage == stage:
                return step.row
        return None

    def text_row(self) -> dict[str, Any] | None:
        """The latest row with a text the stages gave (not one export took from the review)."""
        for step in reversed(self.steps):
            if step.row.get("text") not in (None, "") and step.row.get("text_source") != REVIEW:
                return step.row
        return None

    @property
    def original_text(self) -> str:
        row = self.text_row()
        return str(row["text"]) if row is not None else self.span_text

    @property
    def text_source(self) -> str:
        row = self.text_row()
        if row is None:
            return "subtitles" if self.span_text else ""
        return str(row.get("text_source") or "")

    @property
    def text(self) -> str:
        """The text as reviewed (edited) or as the pipeline chose it."""
        if self.review is not None and self.review.text is not None:
            return self.review.text
        return self.original_text

    @property
    def duration(self) -> float:
        return number(self.last.row.get("duration")) or 0.0

    def audio(self) -> str:
        """The slice's audio, relative to the build's folder (its latest row's file)."""
        path = str(self.last.row.get("path") or "")
        return f"{self.stage}/{path}" if path else ""


# --- doubt -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """The thresholds of a build's stages, read from their folders."""

    speaker_column: str = ""  # threshold.json's column: self_similarity (auto) or score
    min_dnsmos_ovrl: float | None = None  # denoise
    languages: tuple[str, ...] = ()  # transcribe
    min_language_prob: float | None = None
    max_cer: float | None = None
    export: tuple[tuple[str, str, float], ...] = ()  # (column, min|max, limit)


def read_rules(stage_dirs: dict[str, Path]) -> Rules:
    import json

    def load(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    speaker, dnsmos, languages, min_prob, max_cer = "", None, (), None, None
    limits: list[tuple[str, str, float]] = []
    if "speaker_filter" in stage_dirs:
        speaker = str(load(stage_dirs["speaker_filter"] / "threshold.json").get("column") or "")
    if "denoise" in stage_dirs:
        dnsmos = number(config_of(stage_dirs["denoise"], "denoise").get("min_dnsmos_ovrl"))
    if "transcribe" in stage_dirs:
        rules = load(stage_dirs["transcribe"] / "rules.json").get("settings") or {}
        if not rules:
            rules = config_of(stage_dirs["transcribe"], "transcribe")
        languages = tuple(str(x) for x in rules.get("languages") or ())
        min_prob = number(rules.get("min_language_prob"))
        max_cer = number(rules.get("max_cer"))
    if "export" in stage_dirs:
        ex = config_of(stage_dirs["export"], "export")
        for key, column, side in (
            ("min_duration", "duration", "min"),
            ("max_duration", "duration", "max"),
            ("min_snr_db", "snr_db", "min"),
            ("min_dnsmos_ovrl", "dnsmos_ovrl", "min"),
            ("min_similarity", "similarity", "min"),
        ):
            if (limit := number(ex.get(key))) is not None:
                limits.append((column, side, limit))
    return Rules(speaker, dnsmos, languages, min_prob, max_cer, tuple(limits))


def _stage_doubt(entry: Entry, stage: str, rules: Rules) -> tuple[float, str] | None:
    """How near ``entry`` lies to ``stage``'s threshold: (|value − threshold|, a note)."""
    row = entry.row_of(stage)
    if row is None:
        return None
    found: list[tuple[float, str]] = []

    def near(column: str, value: Any, limit: Any, label: str = "threshold") -> None:
        v, t = number(value), number(limit)
        if v is not None and t is not None:
            found.append((abs(v - t), f"{stage}: {column} {v:.4g} vs {label} {t:.4g}"))

    if stage == "speaker_filter":
        column = rules.speaker_column or (
            "self_similarity" if row.get("self_similarity") not in (None, "") else "score"
        )
        near(column, row.get(column), row.get("threshold"))
    elif stage == "denoise" and rules.min_dnsmos_ovrl is not None:
        near("dnsmos_ovrl_after", row.get("dnsmos_ovrl_after"), rules.min_dnsmos_ovrl, "minimum")
    elif stage == "transcribe":
        language = str(row.get("language") or "")
        if language and rules.languages and language not in rules.languages:
            near("language_prob", row.get("language_prob"), rules.min_language_prob, "minimum")
        elif row.get("subtitle_text"):
            near("cer", row.get("cer"), rules.max_cer, "max_cer")
    elif stage == "export":
        for column, side, limit in rules.export:
            near(column, row.get(column), limit, f"{side}imum")
    return min(found) if found else None


def doubt(entry: Entry, rules: Rules) -> tuple[float | None, str]:
    """How near a slice lies to the threshold that decided it: for a slice a stage rejected on
    a threshold, that one; else the first threshold applied to it, in pipeline order (the
    speaker filter's ``|self_similarity − threshold|`` or ``|score − threshold|``, denoise's
    DNSMOS minimum, transcribe's language probability or CER, export's limits). (None, "")
    when no threshold applied. Units differ from stage to stage."""
    decided = entry.status == "rejected" and entry.reason != IN_REVIEW
    if decided and (d := _stage_doubt(entry, entry.stage, rules)) is not None:
        return d
    for step in entry.steps:
        if (d := _stage_doubt(entry, step.stage, rules)) is not None:
            return d
    return None, ""


def _subtitles(stage_dirs: dict[str, Path]) -> SubtitleText:
    """The subtitles beside the sources, in the build's subtitle languages."""
    languages: list[str] = []
    for stage in ("export", "transcribe"):
        if stage in stage_dirs:
            languages = list(config_of(stage_dirs[stage], stage).get("subtitle_languages") or [])
            if languages:
                break
    return SubtitleText(languages or ["ko"])


# --- the build ---------------------------------------------------------------------------------


def stage_folders(output_dir: Path) -> list[tuple[str, Path]]:
    """The build's stage folders from ``segment`` on that hold a table, in pipeline order."""
    from malmoi.registry import names

    order = list(names())
    start = order.index(FIRST_STAGE) if FIRST_STAGE in order else 0
    out = []
    for name in order[start:]:
        folder = output_dir / name
        if (folder / MANIFEST).is_file() or (folder / REJECTED).is_file():
            out.append((name, folder))
    return out


def gather(output_dir: Path) -> list[Entry]:
    """Every slice of the build at ``output_dir``, in pipeline order (by source, then start)."""
    folders = stage_folders(output_dir)
    by_id: dict[str, Entry] = {}
    entries: list[Entry] = []
    for stage, folder in folders:
        rows = [(r, "kept") for r in read_records(folder / MANIFEST)]
        kept_ids = {r["id"] for r, _ in rows}
        rows += [
            (r, "rejected") for r in read_records(folder / REJECTED) if r["id"] not in kept_ids
        ]
        children: dict[str, int] = {}
        for r, _ in rows:
            key = str(r.get("parent_id") or "")
            children[key] = children.get(key, 0) + 1
        for r, status in rows:
            rid, parent = str(r["id"]), str(r.get("parent_id") or "")
            own = bool(r.get("part_of") or r.get("joined"))
            entry = by_id.get(rid)
            if entry is None and not own and parent != rid and parent in by_id:
                previous = by_id[parent]
                if previous.stage != stage and children.get(parent) == 1:
                    if previous.status == "rejected" and stage != REVIEWED:
                        continue  # a stale row: an earlier stage rejected the slice
                    entry = previous
                    entry.ids.append(rid)
                    by_id[rid] = entry
            elif (
                entry is not None
                and entry.stage != stage
                and entry.status == "rejected"
                and stage != REVIEWED
            ):
                continue  # a stale row: an earlier stage rejected the slice
            if entry is None:
                entry = Entry([rid])
                by_id[rid] = entry
                entries.append(entry)
            if entry.steps and entry.stage == stage:
                entry.steps[-1] = Step(stage, status, r)
            else:
                entry.steps.append(Step(stage, status, r))
    lineage = Lineage(output_dir)
    rules = read_rules(dict(folders))
    subtitles = _subtitles(dict(folders))
    for entry in entries:
        first = entry.steps[0].row
        entry.source_id = lineage.source_id(first)
        origin = lineage.origin(first)
        entry.origin_url, entry.origin_title = origin.url, origin.title
        entry.doubt, entry.doubt_note = doubt(entry, rules)
        start, stop = number(entry.value("start")), number(entry.value("stop"))
        if entry.text_row() is None and origin.media and start is not None and stop:
            try:
                entry.span_text = subtitles.text(origin.media, start, stop)
            except (ItemError, OSError):
                entry.span_text = ""
    entries.sort(
        key=lambda e: (e.source_id, number(e.value("start")) or 0.0, len(e.ids[0]), e.ids[0])
    )
    for i, entry in enumerate(entries):
        entry.order = i
    return entries


class Build:
    """A build's slices, read again when a table or the decisions file changes."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir).absolute()
        self.name = self._name()
        self._lock = threading.RLock()
        self._stamp: tuple[Any, ...] | None = None
        self._decisions_stamp: tuple[Any, ...] | None = None
        self.entries: list[Entry] = []
        self.by_id: dict[str, Entry] = {}
        self.ingest: dict[str, dict[str, Any]] = {}
        self.tracks: dict[str, tuple[str, dict[str, Any]]] = {}
        self.refresh()

    def _name(self) -> str:
        import yaml

        for folder in sorted(self.output_dir.glob("*/config.yaml")):
            try:
                data = yaml.safe_load(folder.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and data.get("name"):
                return str(data["name"])
        return self.output_dir.name

    def _tables_stamp(self) -> tuple[Any, ...]:
        out = []
        for _, folder in stage_folders(self.output_dir):
            for table in (MANIFEST, REJECTED, "threshold.json", "rules.json"):
                p = folder / table
                try:
                    st = p.stat()
                    out.append((str(p), st.st_mtime_ns, st.st_size))
                except OSError:
                    pass
        return tuple(out)

    def _tracks(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every row a slice may be cut from, by id: (stage, row), the earliest stage's."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for stage in ("separate", *(s for s, _ in stage_folders(self.output_dir))):
            folder = self.output_dir / stage
            for table in (MANIFEST, REJECTED):
                for r in read_records(folder / table):
                    out.setdefault(r["id"], (stage, r))
        return out

    def span_of(self, entry: Entry) -> tuple[Path, float, float] | None:
        """A file of the build holding the slice's span, for a slice whose own file was never
        written (a part the speaker filter rejected): (file, offset, seconds) — the nearest
        row it descends from whose file exists (its whole slice, else its separated track)."""
        start, stop = number(entry.value("start")), number(entry.value("stop"))
        if start is None or stop is None:
            return None
        seen: set[str] = set()
        rid = str(entry.steps[0].row.get("parent_id") or "")
        while rid and rid not in seen:
            seen.add(rid)
            found = self.tracks.get(rid)
            if found is None:
                return None
            stage, row = found
            path = self.output_dir / stage / str(row.get("path") or "")
            if row.get("path") and path.is_file():
                return path, start - (number(row.get("start")) or 0.0), stop - start
            rid = str(row.get("parent_id") or "")
        return None

    def _stat_decisions(self) -> tuple[Any, ...]:
        try:
            st = decisions.path_of(self.output_dir).stat()
        except OSError:
            return ()
        return (st.st_mtime_ns, st.st_size)

    def refresh(self) -> None:
        """Read the tables again if any changed since, and the decisions if they changed."""
        with self._lock:
            stamp = self._tables_stamp()
            if stamp != self._stamp:
                self.entries = gather(self.output_dir)
                self.by_id = {i: e for e in self.entries for i in e.ids}
                self.ingest = {
                    r["id"]: r for r in read_records(self.output_dir / "ingest" / MANIFEST)
                }
                self.tracks = self._tracks()
                self._stamp = stamp
                self._decisions_stamp = None
            if self._stat_decisions() != self._decisions_stamp:
                self._overlay()

    def _overlay(self) -> None:
        found = decisions.load(self.output_dir)
        for entry in self.entries:
            mine = [found[i] for i in entry.ids if i in found]
            entry.review = max(mine, key=lambda d: d.time) if mine else None
            entry.haystack = " ".join(
                [*entry.ids, entry.text, entry.reason, entry.origin_title, entry.origin_url]
                + [str(entry.value(c) or "") for c in ("asr_text", "subtitle_text")]
            ).casefold()
        self._decisions_stamp = self._stat_decisions()

    def decide(self, slice_id: str, verdict: str | None, text: str | None, set_text: bool) -> Entry:
        """Write a slice's whole review state: ``verdict`` (None: as it was) and, when
        ``set_text``, its text (None, or the pipeline's own text: not edited)."""
        with self._lock:
            self.refresh()
            entry = self.by_id[slice_id]
            now = entry.review or Decision(entry.id)
            new_text = text if set_text else now.text
            if new_text is not None and new_text == entry.original_text:
                new_text = None
            written = decisions.append(
                self.output_dir,
                Decision(entry.id, now.decision if verdict is None else verdict, new_text),  # type: ignore[arg-type]
            )
            entry.review = None if written.empty else written
            self._decisions_stamp = self._stat_decisions()
            return entry

    # --- queries ------------------------------------------------------------------------------

    def select(
        self,
        stage: str = "",
        status: str = "",
        reason: str = "",
        source: str = "",
        review: str = "",
        q: str = "",
    ) -> list[Entry]:
        words = q.casefold().split()
        out = []
        for e in self.entries:
            if stage and e.stage != stage:
                continue
            if status and e.status != status:
                continue
            if reason and reason_kind(e.reason) != reason:
                continue
            if source and e.source_id != source:
                continue
            if review and not _review_matches(e, review):
                continue
            if words and not all(w in e.haystack for w in words):
                continue
            out.append(e)
        return out

    def page(
        self, offset: int = 0, limit: int = 100, sort: str = "order", **filters: str
    ) -> tuple[int, list[Entry]]:
        with self._lock:
            self.refresh()
            chosen = self.select(**filters)
        if sort in ("doubt", "-doubt"):
            sign = -1 if sort == "-doubt" else 1
            chosen.sort(key=lambda e: (e.doubt is None, sign * (e.doubt or 0.0), e.order))
        elif sort in ("duration", "-duration"):
            sign = -1 if sort == "-duration" else 1
            chosen.sort(key=lambda e: (sign * e.duration, e.order))
        elif sort == "id":
            chosen.sort(key=lambda e: e.id)
        limit = max(1, min(limit, MAX_LIMIT))
        offset = max(0, offset)
        return len(chosen), chosen[offset : offset + limit]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            self.refresh()
            entries = list(self.entries)
        stages: dict[str, int] = {}
        reasons: dict[str, int] = {}
        sources: dict[str, dict[str, Any]] = {}
        reviewed = {"keep": 0, "reject": 0, "edited": 0, "reviewed": 0}
        for e in entries:
            stages[e.stage] = stages.get(e.stage, 0) + 1
            if kind := reason_kind(e.reason):
                reasons[kind] = reasons.get(kind, 0) + 1
            s = sources.setdefault(
                e.source_id, {"id": e.source_id, "title": e.origin_title, "count": 0}
            )
            s["count"] += 1
            for key in ("keep", "reject", "edited", "reviewed"):
                reviewed[key] += _review_matches(e, key)
        return {
            "name": self.name,
            "output_dir": str(self.output_dir),
            "total": len(entries),
            "kept": sum(e.status == "kept" for e in entries),
            "rejected": sum(e.status == "rejected" for e in entries),
            "reviewed": reviewed,
            "stages": [{"name": k, "count": v} for k, v in stages.items()],
            "reasons": [{"name": k, "count": v} for k, v in sorted(reasons.items())],
            "sources": list(sources.values()),
            "sorts": list(SORTS),
        }


def _review_matches(e: Entry, what: str) -> bool:
    r = e.review
    if what == "none":
        return r is None
    if r is None:
        return False
    if what == "edited":
        return r.text is not None
    if what == "reviewed":
        return True
    return r.decision == what


def _cell(value: Any) -> Any:
    """A table's cell for JSON: a number as a number, else the text."""
    n = number(value)
    return value if n is None else n


def as_json(e: Entry, full: bool = False) -> dict[str, Any]:
    """An entry as the API gives it (``full``: with every stage's row)."""
    scores = {c: _cell(e.value(c)) for c in SCORES}
    for copy, own in (("snr_db", "snr_db_after"), ("dnsmos_ovrl", "dnsmos_ovrl_after")):
        if scores.get(own) is not None:  # export's copy of denoise's measurement
            scores.pop(copy, None)
    out: dict[str, Any] = {
        "id": e.id,
        "ids": list(e.ids),
        "stage": e.stage,
        "status": e.status,
        "reason": e.reason,
        "reason_kind": reason_kind(e.reason),
        "source_id": e.source_id,
        "origin": {"url": e.origin_url, "title": e.origin_title},
        "start": number(e.value("start")),
        "stop": number(e.value("stop")),
        "duration": e.duration,
        "audio": e.audio(),
        "text": e.text,
        "original_text": e.original_text,
        "text_source": e.text_source,
        "asr_text": str(e.value("asr_text") or ""),
        "subtitle_text": str(e.value("subtitle_text") or ""),
        "scores": {k: v for k, v in scores.items() if v is not None},
        "doubt": e.doubt,
        "doubt_note": e.doubt_note,
        "history": [
            {
                "stage": s.stage,
                "status": s.status,
                "id": s.row["id"],
                "reason": s.row.get("reason", ""),
            }
            for s in e.steps
        ],
        "review": None
        if e.review is None
        else {"decision": e.review.decision, "text": e.review.text, "time": e.review.time},
    }
    if full:
        out["rows"] = {s.stage: s.row for s in e.steps}
    return out
