"""Check an exported dataset folder against its layout (docs: the export layout of issue 12).

:func:`verify` reads ``DATASET/`` and returns every problem found, each naming the file (paths
relative to ``DATASET``) and why:

- ``dataset.json``, ``manifest.jsonl``, ``metadata.csv``, ``metadata.txt`` exist and parse (a bad
  line is named by its line number); every manifest row has the layout's columns and types;
- the three metadata files list the same ids in the same order; ``metadata.csv`` agrees with
  ``manifest.jsonl`` on every shared column (numbers within 1e-6, null = empty cell) and
  ``metadata.txt`` on the text (as ``export.layout.ljspeech_field`` writes it: no '|' inside a
  field) and on its spoken form (``export.layout.normalized_text``: ``3개`` → ``세 개``); every
  line of ``metadata.txt`` has exactly three '|'-separated fields;
- every ``wavs/<id>.wav`` exists, decodes to the end, is a mono 16-bit PCM WAV at
  ``dataset.json``'s ``sample_rate``, and lasts the manifest's ``duration`` within 10 ms; a WAV
  whose header promises more audio than the file holds is reported as truncated;
- no two WAVs hold the same audio: the sha256 of the decoded samples (int16), not of the file
  bytes, so a copy with another header (an extra LIST chunk, another writer) is still caught —
  and the samples are decoded anyway to find truncation, so the hash costs no extra read;
- the limits in ``dataset.json`` hold on every row (null = no limit). A row whose score is null
  while that score's limit is set is a problem too: the dataset then claims a bar the row was
  never measured against. Duration limits allow one sample of rounding at the sample rate. A
  slice a person kept in review past the limits (``dataset.json``'s
  ``review.kept_past_limits``, :mod:`export.review`) is not held to them;
- every split is train/validation/test and no ``source_id`` is in two splits;
- nothing in ``wavs/`` that no row lists (orphans).

Audio is read in blocks, one file at a time: memory does not grow with the dataset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.layout import (
    COLUMNS,
    INFO,
    LIMITS,
    MANIFEST,
    METADATA_CSV,
    METADATA_TXT,
    NULLABLE_NUMBER_COLUMNS,
    NUMBER_COLUMNS,
    SPLITS,
    STR_COLUMNS,
    WAVS,
    ljspeech_field,
    normalized_text,
)
from malmoi.logs import get_logger

log = get_logger(__name__)

GENDERS = ("male", "female", "")

DURATION_TOLERANCE = 0.010  # s, WAV length against the manifest's duration
VALUE_TOLERANCE = 1e-6  # numbers in metadata.csv against manifest.jsonl
BLOCK_FRAMES = 1 << 16  # frames decoded at a time
# what the build's check found each WAV to hold, by its size, modification time and inode (a
# hidden folder: dataset loaders and the orphan check leave it alone)
AUDIO_FACTS = ".verify/audio.json"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: the file (relative to the dataset) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {' '.join(self.reason.split())}"


class NotADataset(ValueError):
    """The folder is no dataset at all (missing, or neither manifest.jsonl nor dataset.json)."""


@dataclass
class Report:
    """What :func:`check` found: the problems, and what was checked."""

    dataset: Path
    problems: list[Problem] = field(default_factory=list)
    slices: int = 0  # rows of manifest.jsonl
    audio_files: int = 0  # WAVs decoded to the end
    seconds: float = 0.0  # their total length

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: ``N problems in DATASET`` or ``DATASET: ok — N slices, H hours, …``."""
        if self.problems:
            n = len(self.problems)
            return f"{n} problem{'s' if n != 1 else ''} in {self.dataset}"
        return (
            f"{self.dataset}: ok — {self.slices} slices, {self.seconds / 3600:.2f} hours, "
            f"checked {self.audio_files} WAVs (decoded, format, duration ±10 ms, duplicates), "
            f"{MANIFEST}, {METADATA_CSV}, {METADATA_TXT} agree, limits, splits by source, "
            "no orphans"
        )


@dataclass
class _Row:
    line: int  # line number in manifest.jsonl
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return self.data.get("id") if isinstance(self.data.get("id"), str) else ""

    @property
    def label(self) -> str:
        return f"line {self.line} ({WAVS}/{self.id}.wav)" if self.id else f"line {self.line}"


def verify(dataset: Path) -> list[Problem]:
    """Every problem of the dataset folder ``dataset`` (empty when it is sound).

    Raises :class:`NotADataset` when ``dataset`` is no dataset folder at all."""
    return check(dataset).problems


def check(dataset: Path, remember: bool = False) -> Report:
    """Read the dataset folder ``dataset`` and return its problems with counts of what was
    checked. Raises :class:`NotADataset` when it is no dataset folder at all.

    ``remember`` (the build's check): what each WAV decoded to is kept in
    :data:`AUDIO_FACTS`, and a WAV unchanged since (its size, modification time and inode) is
    not decoded again, so a build's check costs its new slices; without it (``malmoi
    verify``), every WAV is decoded."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise NotADataset(f"{dataset}: not a folder")
    if not (dataset / MANIFEST).exists() and not (dataset / INFO).exists():
        raise NotADataset(f"{dataset}: not a dataset folder (no {MANIFEST} and no {INFO})")
    report = Report(dataset)
    problems = report.problems

    info = _read_info(dataset / INFO, problems)
    rows = _read_manifest(dataset / MANIFEST, problems)
    report.slices = len(rows)
    if not rows and (dataset / MANIFEST).is_file() and not problems:
        problems.append(Problem(MANIFEST, "no slices: the dataset is empty"))
        return report
    good = _check_rows(rows, problems)  # unique, well-formed rows by id
    ids = [r.id for r in rows]
    _check_csv(dataset / METADATA_CSV, rows, ids, good, problems)
    _check_txt(dataset / METADATA_TXT, ids, good, problems)
    if info is not None:
        _check_limits(info, good, problems)
    _check_splits(good, problems)
    _check_audio(dataset, info, good, report, remember)
    _check_orphans(dataset, rows, problems)
    log.debug("%s: %d problem(s), %d slices", dataset, len(problems), report.slices)
    return report


# --- metadata files --------------------------------------------------------------------------


def _read_info(path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    """dataset.json as a dict with a valid ``sample_rate`` (int or None) and ``limits``; None
    when it is missing or does not parse."""
    if not path.is_file():
        problems.append(Problem(INFO, "missing"))
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        problems.append(Problem(INFO, f"not UTF-8 ({exc.reason} at byte {exc.start})"))
        return None
    except json.JSONDecodeError as exc:
        problems.append(Problem(INFO, f"line {exc.lineno}: not valid JSON ({exc.msg})"))
        return None
    if not isinstance(info, dict):
        problems.append(Problem(INFO, f"a JSON {type(info).__name__}, not an object"))
        return None
    sr = info.get("sample_rate")
    if not (isinstance(sr, int) and not isinstance(sr, bool) and sr > 0):
        problems.append(Problem(INFO, f"sample_rate is {sr!r}, not a positive integer"))
        info["sample_rate"] = None
    limits = info.get("limits")
    if not isinstance(limits, dict):
        problems.append(Problem(INFO, f"limits is {_short(limits)}, not an object"))
        info["limits"] = {}
    else:
        for key, value in limits.items():
            if key not in LIMITS:
                log.warning("%s: unknown limit %s is not checked", path, key)
            elif value is not None and not _is_number(value):
                problems.append(Problem(INFO, f"limits.{key} is {_short(value)}, not a number"))
    splits = info.get("splits")
    if not isinstance(splits, dict) or not set(splits) <= set(SPLITS):
        problems.append(
            Problem(INFO, f"splits is {_short(splits)}, not an object of {', '.join(SPLITS)}")
        )
    return info


def _read_manifest(path: Path, problems: list[Problem]) -> list[_Row]:
    """The JSON objects of manifest.jsonl with their line numbers; a line that is no JSON
    object is a problem and left out."""
    rows: list[_Row] = []
    if not path.is_file():
        problems.append(Problem(MANIFEST, "missing"))
        return rows
    n = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(
                        Problem(
                            MANIFEST, f"line {n}: not valid JSON ({exc.msg}, column {exc.colno})"
                        )
                    )
                    continue
                if not isinstance(obj, dict):
                    problems.append(
                        Problem(MANIFEST, f"line {n}: a JSON {type(obj).__name__}, not an object")
                    )
                    continue
                rows.append(_Row(n, obj))
    except UnicodeDecodeError as exc:
        problems.append(Problem(MANIFEST, f"line {n + 1}: not UTF-8 ({exc.reason})"))
    return rows


def _check_rows(rows: list[_Row], problems: list[Problem]) -> dict[str, _Row]:
    """Check each manifest row's columns and types; return the well-formed rows by id (the
    first of a duplicated id only)."""
    good: dict[str, _Row] = {}
    for row in rows:
        data, where = row.data, row.label
        missing = [c for c in COLUMNS if c not in data]
        if missing:
            problems.append(Problem(MANIFEST, f"{where}: missing column(s) {', '.join(missing)}"))
        bad = [c for c in STR_COLUMNS if c in data and not isinstance(data[c], str)]
        bad += [c for c in NUMBER_COLUMNS if c in data and not _is_number(data[c])]
        bad += [
            c
            for c in NULLABLE_NUMBER_COLUMNS
            if data.get(c) is not None and not _is_number(data[c])
        ]
        for c in bad:
            kind = "a string" if c in STR_COLUMNS else "a number"
            problems.append(Problem(MANIFEST, f"{where}: {c} is {_short(data[c])}, not {kind}"))
        if missing or bad:
            continue
        rid = data["id"]
        if not rid or rid in {".", ".."} or "/" in rid or "\\" in rid:
            problems.append(Problem(MANIFEST, f"line {row.line}: id {rid!r} is no file name"))
            continue
        ok = True
        if data["audio_filepath"] != f"{WAVS}/{rid}.wav":
            problems.append(
                Problem(
                    MANIFEST,
                    f"{where}: audio_filepath is {data['audio_filepath']!r}, not {WAVS}/{rid}.wav",
                )
            )
            ok = False
        if data["duration"] <= 0:
            problems.append(Problem(MANIFEST, f"{where}: duration {data['duration']} is not > 0"))
        start, end = data["source_offset"], data["source_end"]
        if start is not None and end is not None and end < start:
            problems.append(
                Problem(MANIFEST, f"{where}: source_end {end} is before source_offset {start}")
            )
        if data["gender"] not in GENDERS:
            problems.append(
                Problem(MANIFEST, f"{where}: gender {data['gender']!r} is not male, female or ''")
            )
        if data["split"] not in SPLITS:
            problems.append(
                Problem(MANIFEST, f"{where}: split {data['split']!r} is not {', '.join(SPLITS)}")
            )
        if not data["source_id"]:
            problems.append(Problem(MANIFEST, f"{where}: source_id is empty"))
        if rid in good:
            problems.append(
                Problem(MANIFEST, f"{where}: id {rid!r} again (first on line {good[rid].line})")
            )
            continue
        if ok:
            good[rid] = row
    return good


def _check_csv(
    path: Path, rows: list[_Row], ids: list[str], good: dict[str, _Row], problems: list[Problem]
) -> None:
    """metadata.csv: header file_name + the manifest's columns minus audio_filepath, the same
    ids in the same order, the same values."""
    if not path.is_file():
        problems.append(Problem(METADATA_CSV, "missing"))
        return
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                problems.append(Problem(METADATA_CSV, "empty (no header)"))
                return
            if header[0] != "file_name":
                problems.append(
                    Problem(METADATA_CSV, f"first column is {header[0]!r}, not 'file_name'")
                )
            keys = {k for r in rows for k in r.data}
            expected = {"file_name", *(keys - {"audio_filepath"})}
            if set(header) != expected or len(header) != len(set(header)):
                problems.append(
                    Problem(
                        METADATA_CSV,
                        f"columns differ from {MANIFEST}'s: missing "
                        f"{sorted(expected - set(header)) or 'none'}, extra "
                        f"{sorted(set(header) - expected) or 'none'}"
                        + (", repeated" if len(header) != len(set(header)) else ""),
                    )
                )
            csv_ids: list[str] = []
            for cells in reader:
                line = reader.line_num
                if len(cells) != len(header):
                    problems.append(
                        Problem(
                            METADATA_CSV,
                            f"line {line}: {len(cells)} cells, the header has {len(header)}",
                        )
                    )
                    continue
                cell = dict(zip(header, cells, strict=True))
                rid = cell.get("id", "")
                csv_ids.append(rid)
                row = good.get(rid)
                if row is None:
                    continue
                where = f"line {line} ({WAVS}/{rid}.wav)"
                if cell.get("file_name") != row.data["audio_filepath"]:
                    problems.append(
                        Problem(
                            METADATA_CSV,
                            f"{where}: file_name {cell.get('file_name')!r}, {MANIFEST} has "
                            f"{row.data['audio_filepath']!r}",
                        )
                    )
                for key in header:
                    if key in ("file_name", "id") or key not in row.data:
                        continue
                    if not _same(row.data[key], cell[key]):
                        problems.append(
                            Problem(
                                METADATA_CSV,
                                f"{where}: {key} {_short(cell[key])} differs from {MANIFEST} "
                                f"line {row.line}: {_short(row.data[key])}",
                            )
                        )
    except UnicodeDecodeError as exc:
        problems.append(Problem(METADATA_CSV, f"not UTF-8 ({exc.reason} at byte {exc.start})"))
        return
    except csv.Error as exc:
        problems.append(Problem(METADATA_CSV, f"does not parse as CSV ({exc})"))
        return
    _compare_ids(METADATA_CSV, csv_ids, ids, problems)


def _check_txt(path: Path, ids: list[str], good: dict[str, _Row], problems: list[Problem]) -> None:
    """metadata.txt: ``id|text|normalized_text`` lines with the manifest's ids in its order and
    its texts."""
    if not path.is_file():
        problems.append(Problem(METADATA_TXT, "missing"))
        return
    txt_ids: list[str] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            for n, raw in enumerate(fh, 1):
                line = raw.rstrip("\r\n")
                fields = line.split("|")
                if len(fields) != 3:  # a loader would read another text, or none
                    problems.append(
                        Problem(
                            METADATA_TXT,
                            f"line {n}: {len(fields)} '|'-separated field(s), not 3 "
                            "(id|text|normalized_text)",
                        )
                    )
                    continue
                rid, text, spoken = fields
                txt_ids.append(rid)
                row = good.get(rid)
                if row is None:
                    continue
                if text != ljspeech_field(row.data["text"]):
                    problems.append(
                        Problem(
                            METADATA_TXT,
                            f"line {n} ({WAVS}/{rid}.wav): text {_short(text)} differs from "
                            f"{MANIFEST} line {row.line}: {_short(row.data['text'])}",
                        )
                    )
                elif spoken != normalized_text(row.data["text"]):
                    problems.append(
                        Problem(
                            METADATA_TXT,
                            f"line {n} ({WAVS}/{rid}.wav): normalized_text {_short(spoken)} is "
                            f"not the spoken form of the text: "
                            f"{_short(normalized_text(row.data['text']))}",
                        )
                    )
    except UnicodeDecodeError as exc:
        problems.append(Problem(METADATA_TXT, f"not UTF-8 ({exc.reason} at byte {exc.start})"))
        return
    _compare_ids(METADATA_TXT, txt_ids, ids, problems)


def _compare_ids(name: str, got: list[str], want: list[str], problems: list[Problem]) -> None:
    """One problem per way ``got`` (a metadata file's ids) differs from the manifest's."""
    if got == want:
        return
    got_set, want_set = set(got), set(want)
    missing = [i for i in want if i not in got_set]
    extra = [i for i in got if i not in want_set]
    if missing:
        problems.append(
            Problem(name, f"{len(missing)} id(s) of {MANIFEST} not listed: {_few(missing)}")
        )
    if extra:
        problems.append(Problem(name, f"{len(extra)} id(s) not in {MANIFEST}: {_few(extra)}"))
    if not missing and not extra:
        for i, (a, b) in enumerate(zip(got, want, strict=False), 1):
            if a != b:
                problems.append(
                    Problem(
                        name,
                        f"rows not in {MANIFEST}'s order: row {i} is {a!r}, {MANIFEST} has {b!r}",
                    )
                )
                return
        problems.append(Problem(name, f"{len(got)} rows, {MANIFEST} has {len(want)}"))


# --- rules -----------------------------------------------------------------------------------


def _check_limits(info: dict[str, Any], good: dict[str, _Row], problems: list[Problem]) -> None:
    """Every limit of dataset.json holds on every row but those a person kept past them
    (``review.kept_past_limits``); a null score under a set limit fails."""
    sr = info.get("sample_rate")
    review = info.get("review")
    kept = review.get("kept_past_limits") if isinstance(review, dict) else None
    exempt = {str(i) for i in kept} if isinstance(kept, list) else set()
    for key, (column, is_min) in LIMITS.items():
        limit = info["limits"].get(key)
        if not _is_number(limit):
            continue
        slack = 1 / sr if column == "duration" and sr else 1e-9
        for row in good.values():
            if row.id in exempt:
                continue
            value = row.data[column]
            if value is None:
                problems.append(
                    Problem(
                        MANIFEST,
                        f"{row.label}: {column} is null but {INFO} sets limits.{key} = {limit}",
                    )
                )
            elif (value < limit - slack) if is_min else (value > limit + slack):
                word = "below" if is_min else "above"
                problems.append(
                    Problem(
                        MANIFEST,
                        f"{row.label}: {column} {value:g} is {word} limits.{key} = {limit}",
                    )
                )


def _check_splits(good: dict[str, _Row], problems: list[Problem]) -> None:
    """No source_id in two splits."""
    by_source: dict[str, dict[str, list[_Row]]] = defaultdict(lambda: defaultdict(list))
    for row in good.values():
        by_source[row.data["source_id"]][row.data["split"]].append(row)
    for source, splits in by_source.items():
        if len(splits) < 2:
            continue
        parts = [
            f"{split} ({len(rs)}: {_few([f'{WAVS}/{r.id}.wav' for r in rs])})"
            for split, rs in sorted(splits.items())
        ]
        problems.append(
            Problem(
                MANIFEST, f"source_id {source!r} is in {len(splits)} splits: {'; '.join(parts)}"
            )
        )


# --- audio -----------------------------------------------------------------------------------


def _check_audio(
    dataset: Path,
    info: dict[str, Any] | None,
    good: dict[str, _Row],
    report: Report,
    remember: bool = False,
) -> None:
    """Decode every listed WAV to the end, one block at a time: format, duration, duplicates.
    With ``remember``, what a WAV decoded to is kept in :data:`AUDIO_FACTS` by its size,
    modification time and inode, and a WAV unchanged since is not decoded again."""
    problems = report.problems
    want_sr = info.get("sample_rate") if info else None
    known = _read_facts(dataset) if remember else {}
    now: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}  # sha256 of the samples -> first file
    for rid, row in good.items():
        rel = f"{WAVS}/{rid}.wav"
        path = dataset / rel
        if not path.is_file():
            problems.append(Problem(rel, f"missing (listed on {MANIFEST} line {row.line})"))
            continue
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        facts = known.get(rel)
        if not isinstance(facts, dict) or facts.get("stamp") != stamp:
            facts = {**_wav_facts(path), "stamp": stamp}
        now[rel] = facts
        short = facts["shortfall"]
        if short is not None:
            problems.append(
                Problem(
                    rel,
                    f"truncated: the header declares {short[0]} bytes of audio, "
                    f"the file holds {short[1]}",
                )
            )
        sr = facts["samplerate"]
        if facts["opened"]:
            if facts["format"] not in ("WAV", "WAVEX"):
                problems.append(Problem(rel, f"a {facts['format']} file, not WAV"))
            if facts["subtype"] != "PCM_16":
                problems.append(
                    Problem(rel, f"{facts['subtype']} samples, not 16-bit PCM (PCM_16)")
                )
            if facts["channels"] != 1:
                problems.append(Problem(rel, f"{facts['channels']} channels, not mono"))
            if want_sr and sr != want_sr:
                problems.append(Problem(rel, f"sample rate {sr} Hz, {INFO} says {want_sr} Hz"))
        if facts["error"] is not None:
            problems.append(Problem(rel, f"does not decode: {facts['error']}"))
            continue
        frames = facts["frames"]
        report.audio_files += 1
        seconds = frames / sr
        report.seconds += seconds
        if frames == 0:
            problems.append(Problem(rel, "holds no audio"))
        expected = row.data["duration"]
        if abs(seconds - expected) > DURATION_TOLERANCE + 1e-9:
            problems.append(
                Problem(
                    rel,
                    f"lasts {seconds:.3f} s ({frames} frames at {sr} Hz), {MANIFEST} line "
                    f"{row.line} says {expected:.3f} s (more than 10 ms apart)",
                )
            )
        key = facts["sha256"]
        if frames and key in seen:
            problems.append(
                Problem(rel, f"the same audio as {seen[key]} (sha256 of the decoded samples)")
            )
        else:
            seen.setdefault(key, rel)
    if remember:
        from malmoi.files import atomic_write_text

        (dataset / AUDIO_FACTS).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dataset / AUDIO_FACTS, json.dumps(now) + "\n")


def _wav_facts(path: Path) -> dict[str, Any]:
    """What a WAV decodes to: its header's shortfall (:func:`_data_shortfall`), format,
    subtype, channels, rate, frames and the sha256 of its int16 samples, or why it does not
    decode (``error``; ``opened``: whether its header was read)."""
    import soundfile as sf

    facts: dict[str, Any] = {
        "shortfall": _data_shortfall(path),
        "opened": False,
        "error": None,
        "format": None,
        "subtype": None,
        "channels": None,
        "samplerate": None,
        "frames": 0,
        "sha256": "",
    }
    digest = hashlib.sha256()
    frames = 0
    try:
        with sf.SoundFile(path) as f:
            facts.update(
                opened=True,
                format=f.format,
                subtype=f.subtype,
                channels=f.channels,
                samplerate=f.samplerate,
            )
            digest.update(f"{f.channels}:".encode())
            for block in f.blocks(blocksize=BLOCK_FRAMES, dtype="int16", always_2d=True):
                digest.update(block.tobytes())
                frames += len(block)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        facts["error"] = getattr(exc, "error_string", None) or " ".join(str(exc).split())
        return facts
    facts.update(frames=frames, sha256=digest.hexdigest())
    return facts


def _read_facts(dataset: Path) -> dict[str, Any]:
    """What an earlier check kept in :data:`AUDIO_FACTS` ({} when none or unreadable)."""
    from malmoi.manifest import read_json_object

    return read_json_object(dataset / AUDIO_FACTS)


def _data_shortfall(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF/WAVE file's data chunk when the file holds less than
    its header declares; None when it holds all of it or is no plain RIFF WAVE."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk, length = struct.unpack("<4sI", fh.read(8))
            if chunk == b"data":
                present = size - pos - 8
                return (length, present) if length > present else None
            pos += 8 + length + (length & 1)
    return None


def _check_orphans(dataset: Path, rows: list[_Row], problems: list[Problem]) -> None:
    """Files in wavs/ that no manifest row lists."""
    wavs = dataset / WAVS
    if not wavs.is_dir():
        problems.append(Problem(WAVS, "missing (no audio folder)"))
        return
    listed = {r.data.get("audio_filepath") for r in rows} | {f"{WAVS}/{r.id}.wav" for r in rows}
    for path in sorted(wavs.iterdir()):
        rel = f"{WAVS}/{path.name}"
        if rel not in listed:
            problems.append(Problem(rel, f"not listed in {MANIFEST} (orphan)"))


# --- helpers ---------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _same(value: Any, cell: str) -> bool:
    """Whether a metadata.csv cell holds the manifest's ``value`` (null = empty cell, numbers
    within 1e-6)."""
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell.lower() == str(value).lower()
    if isinstance(value, int | float):
        try:
            return abs(float(cell) - value) <= VALUE_TOLERANCE
        except ValueError:
            return False
    if isinstance(value, str):
        return cell == value
    return cell == json.dumps(value, ensure_ascii=False)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _few(items: list[str], limit: int = 5) -> str:
    head = ", ".join(items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")
