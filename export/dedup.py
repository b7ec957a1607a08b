"""Duplicates across sources: found after export's loop, before the splits are drawn.

A slice is a **duplicate** when its audio is already in the dataset through a slice of a source
that comes first; it goes to ``rejected.csv`` with the reason ``duplicate of <id>`` (the id of
the slice kept, or of the earlier source when it has no slice there). Sources come in order of
their publication day (the crawl's ``date``, carried by the ingest row; undated sources after
dated ones), then of their source id: the earliest copy is kept, every later one rejected.

Three checks, cheapest first:

1. **the same decoded source** — the sha256 of the ingest WAV's samples (``audio_sha256`` of
   the ingest row, not of the file's bytes): every slice of the later source is a duplicate of
   the earlier source's slice that overlaps it most in time;
2. **the same exported slice** — the sha256 of the int16 samples of ``wavs/<id>.wav``;
3. **near duplicates** — the same speech re-encoded (mp3, AAC, Opus), re-uploaded, or
   rebroadcast inside other audio (an intro before it, other cuts): Chromaprint fingerprints
   (``fpcalc -raw``, 32-bit values, about 8 a second, each summing 2.7 s of chroma) of each
   source's original media, so the slices' times (``source_offset``/``source_end``) map into
   them. A source with no media on disk or no slice times (plain files given to ``malmoi
   export``), or under :data:`MIN_ITEMS` fingerprint values (Chromaprint needs 2.7 s before its
   first value), is fingerprinted slice by slice from the exported WAV padded with
   :data:`PAD` seconds of silence. Candidate alignments come from an inverted index of the
   values (no pair of sources is compared unless they share values at a consistent offset:
   the cost is one index look-up per value, not one comparison per pair of slices); each is
   checked by its bit error rate, smoothed over :data:`WINDOW` values. A later slice is a
   duplicate when at least half of its values align under ``dedup_max_ber``, the aligned
   range overlaps kept slices of the earlier unit for at least ``dedup_min_overlap`` of its
   duration, and its fingerprint changes from value to value (:data:`MIN_CHANGE`): a steady
   tone or hum has too little in its fingerprint to call two of them copies.

Reads: the export folder's kept rows and the rows ``rejected.csv`` holds as duplicates (a new
threshold re-partitions them), the WAVs, the sources' media. Writes, under ``.dedup/`` in the
export folder: ``fingerprints/<digest>.npy`` (one per source or slice, keyed by its media's
path, size and mtime or by the slice's key), ``hashes.json`` (the slices' sample hashes by
key) and ``wavs/<id>.wav`` (the WAVs of rejected duplicates, moved out of ``wavs/`` so the
dataset has no orphans, and moved back when a new setting keeps them). A hidden folder: dataset
loaders skip it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from malmoi.audio import pcm_sha256
from malmoi.errors import StageStopped
from malmoi.files import atomic_path, atomic_write_text
from malmoi.logs import get_logger

log = get_logger(__name__)

SIDECAR = ".dedup"
REASON = "duplicate of "
ITEM_SECONDS = 1365 / 11025  # Chromaprint: 11025 Hz, 4096-sample frames, a third overlapping
ITEM_CENTRE = 1.36  # seconds from a value's first sample to the middle of what it sums (2.7 s)
MIN_ITEMS = 16  # a source with fewer values is fingerprinted slice by slice
PAD = 1.5  # seconds of silence around a slice fingerprinted on its own
WINDOW = 8  # values (1 s) the bit error rate is smoothed over
MIN_VOTES = 3  # equal values at one offset that make it a candidate alignment
MAX_POSTINGS = 200  # a value seen more often than this (silence, a tone) proposes nothing
# share of consecutive values that differ in a slice's span for it to be judged: speech changes
# value at 91-100% of steps (LibriSpeech, any 12 values), a steady tone or hum far less, and two
# steady tones of one pitch would look alike whatever they are
MIN_CHANGE = 0.75
FPCALC_TIMEOUT = 600.0
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


class FpcalcMissing(StageStopped):
    """Chromaprint's ``fpcalc`` is not installed (the machine's fault: a one-line error that
    stops the stage, as a full disk does)."""


def require_fpcalc() -> None:
    """Raise a one-line error naming how to install ``fpcalc`` when it is not on PATH."""
    if shutil.which("fpcalc") is None:
        raise FpcalcMissing(
            "fpcalc (Chromaprint) not found on PATH, needed by export's duplicate check: "
            "install it (Debian/Ubuntu: sudo apt-get install libchromaprint-tools; macOS: brew "
            "install chromaprint) or set export.dedup: false"
        )


def fpcalc(path: Path) -> np.ndarray:
    """The raw Chromaprint fingerprint of a whole media file (uint32, about 8 values a second;
    empty for audio under 2.7 s or that fpcalc cannot decode)."""
    from malmoi.procs import tool_command

    proc = subprocess.run(
        tool_command(["fpcalc", "-raw", "-plain", "-length", "0", str(path)]),
        capture_output=True,
        text=True,
        timeout=FPCALC_TIMEOUT,
        check=False,
    )
    # fpcalc 1.5 exits 3 after "Error decoding audio frame (End of file)" at the end of
    # many files, the fingerprint printed all the same: its output decides
    text = proc.stdout.strip()
    if not text or not text.replace(",", "").isdigit():
        return np.zeros(0, dtype=np.uint32)
    return np.array([int(v) for v in text.split(",")], dtype=np.uint32)


def padded_fingerprint(wav: Path, tmp_dir: Path) -> np.ndarray:
    """The fingerprint of a (short) WAV with :data:`PAD` seconds of silence before and after
    it, so that Chromaprint has values for a 1-s slice."""
    import soundfile as sf

    audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    pad = np.zeros((int(PAD * sr), audio.shape[1]), dtype=np.float32)
    tmp = tmp_dir / f"{hashlib.sha1(str(wav).encode()).hexdigest()[:16]}.wav"
    sf.write(str(tmp), np.concatenate([pad, audio, pad]), sr, subtype="PCM_16")
    try:
        return fpcalc(tmp)
    finally:
        tmp.unlink(missing_ok=True)


def bit_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between two equally long uint32 arrays, value by value."""
    x = np.ascontiguousarray(a ^ b).view(np.uint8)
    return _POPCOUNT[x].reshape(-1, 4).sum(axis=1)


def smoothed_ber(a: np.ndarray, b: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The bit error rate of ``a`` against ``b`` (equal lengths) at each value, averaged over
    ``window`` values centred on it (fewer at the ends)."""
    errors = bit_errors(a, b).astype(np.float64) / 32
    if len(errors) == 0:
        return errors
    w = min(window, len(errors))
    kernel = np.ones(w)
    return np.convolve(errors, kernel, "same") / np.convolve(np.ones(len(errors)), kernel, "same")


def item_span(start: float, stop: float, n: int) -> tuple[int, int]:
    """The fingerprint values (first, past-last) whose centre lies in [start, stop] seconds of
    a timeline whose value 0 starts at 0 s; at least the nearest value for a short range."""
    lo = int(np.ceil((start - ITEM_CENTRE) / ITEM_SECONDS))
    hi = int(np.floor((stop - ITEM_CENTRE) / ITEM_SECONDS)) + 1
    lo, hi = max(lo, 0), min(hi, n)
    if hi <= lo:  # shorter than a value's step: the one nearest its middle
        mid = round(((start + stop) / 2 - ITEM_CENTRE) / ITEM_SECONDS)
        lo, hi = min(max(mid, 0), n - 1), min(max(mid, 0), n - 1) + 1
    return (lo, hi) if n else (0, 0)


@dataclass
class Unit:
    """What one fingerprint covers: a source (its slices at their source times) or a single
    slice (at ``PAD`` seconds into its padded fingerprint)."""

    name: str
    rank: int  # position of its source in the keep order
    fingerprint: np.ndarray
    slices: list[tuple[str, float, float]] = field(default_factory=list)  # (id, start, stop)


@dataclass(frozen=True)
class Alignment:
    """Unit ``b``'s value j lies at value j + ``offset`` of the earlier unit ``a``; ``ber`` is
    the smoothed bit error rate at each of b's values (1.0 outside the overlap)."""

    a: str
    offset: int
    ber: np.ndarray


def candidates(
    index: dict[int, list[tuple[str, int]]], fp: np.ndarray, min_votes: int = MIN_VOTES
) -> list[tuple[str, int]]:
    """(unit, offset) pairs where at least ``min_votes`` values of ``fp`` equal those of an
    indexed unit at one offset (neighbouring offsets pooled), best first."""
    votes: dict[tuple[str, int], int] = defaultdict(int)
    for j, value in enumerate(fp.tolist()):
        postings = index.get(value)
        if not postings or len(postings) > MAX_POSTINGS:
            continue
        for name, pos in postings:
            votes[(name, pos - j)] += 1
    pooled = {
        (name, d): n + votes.get((name, d - 1), 0) + votes.get((name, d + 1), 0)
        for (name, d), n in votes.items()
    }
    found = sorted(
        ((n, key) for key, n in pooled.items() if n >= min_votes),
        key=lambda t: (-t[0], t[1]),
    )
    out: list[tuple[str, int]] = []
    for _, (name, d) in found:  # a peak, not its neighbours
        if not any(o == name and abs(od - d) <= 1 for o, od in out):
            out.append((name, d))
    return out


class Index:
    """The inverted index of :func:`candidates` over every unit's fingerprint at once: each
    unit's candidate alignments against the units before it (in keep order), found for all
    units together from the values sorted by (value, unit), as the dictionary filled unit
    after unit finds them. A build's hundreds of hour-long sources are millions of values:
    a few arrays and one sort here, not a Python tuple per value (rebuilt every run)."""

    def __init__(self, units: list[Unit], min_votes: int = MIN_VOTES):
        self.names = [u.name for u in units]
        self.found: dict[int, list[tuple[str, int]]] = {}
        sizes = [len(u.fingerprint) for u in units]
        if not sum(sizes):
            return
        values = np.concatenate([u.fingerprint for u in units]).astype(np.uint64)
        unit = np.repeat(np.arange(len(units), dtype=np.uint64), sizes)
        pos = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
        keys = (values << np.uint64(32)) | unit
        order = np.argsort(keys, kind="stable")
        keys, unit, pos = keys[order], unit[order].astype(np.int64), pos[order]
        at = np.arange(len(keys))
        # for each value: where its postings start, and where this unit's own begin
        value_starts = np.r_[True, (keys[1:] >> np.uint64(32)) != (keys[:-1] >> np.uint64(32))]
        unit_starts = np.r_[True, keys[1:] != keys[:-1]]
        first = np.maximum.accumulate(np.where(value_starts, at, 0))
        own = np.maximum.accumulate(np.where(unit_starts, at, 0))
        earlier = own - first  # postings of the units before this one
        hit = (earlier > 0) & (earlier <= MAX_POSTINGS)  # as the dictionary counts them
        n = earlier[hit]
        if not len(n):
            return
        other = np.repeat(first[hit] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        this = np.repeat(at[hit], n)
        span = 2 * max(sizes) + 2  # offsets d = pos - j, shifted to 1 .. span - 2
        code = (unit[this] * len(units) + unit[other]) * span + (pos[other] - pos[this] + span // 2)
        codes, votes = np.unique(code, return_counts=True)

        def count(wanted: np.ndarray) -> np.ndarray:
            i = np.minimum(np.searchsorted(codes, wanted), len(codes) - 1)
            return np.where(codes[i] == wanted, votes[i], 0)

        pooled = votes + count(codes - 1) + count(codes + 1)  # neighbouring offsets pooled
        good = pooled >= min_votes
        per: dict[int, list[tuple[int, tuple[str, int]]]] = {}
        for v, c in zip(pooled[good].tolist(), codes[good].tolist(), strict=True):
            pair, d = divmod(c, span)
            k, a = divmod(pair, len(units))
            per.setdefault(k, []).append((v, (self.names[a], d - span // 2)))
        for k, found in per.items():
            found.sort(key=lambda t: (-t[0], t[1]))
            out: list[tuple[str, int]] = []
            for _, (name, d) in found:  # a peak, not its neighbours
                if not any(o == name and abs(od - d) <= 1 for o, od in out):
                    out.append((name, d))
            self.found[k] = out

    def candidates(self, k: int) -> list[tuple[str, int]]:
        """:func:`candidates` of the ``k``-th unit's fingerprint against the units before it."""
        return self.found.get(k, [])


def align(a: Unit, b: Unit, offset: int) -> Alignment:
    """The smoothed bit error rate of ``b`` against ``a`` at ``offset``."""
    ber = np.ones(len(b.fingerprint))
    lo, hi = max(0, -offset), min(len(b.fingerprint), len(a.fingerprint) - offset)
    if hi > lo:
        ber[lo:hi] = smoothed_ber(a.fingerprint[lo + offset : hi + offset], b.fingerprint[lo:hi])
    return Alignment(a.name, offset, ber)


def match_slice(
    b_slice: tuple[str, float, float],
    b: Unit,
    a: Unit,
    alignment: Alignment,
    kept: set[str],
    max_ber: float,
    min_overlap: float,
) -> str | None:
    """The id of the kept slice of ``a`` that ``b_slice`` duplicates through ``alignment``, or
    None: half its values under ``max_ber``, its values changing (:data:`MIN_CHANGE`: not a
    steady sound), and kept slices of ``a`` covering at least
    ``min_overlap`` of it once mapped (the one overlapping most is named)."""
    _, start, stop = b_slice
    lo, hi = item_span(start, stop, len(b.fingerprint))
    if hi <= lo or float(np.mean(alignment.ber[lo:hi] <= max_ber)) < 0.5:
        return None
    span = b.fingerprint[lo:hi]
    if len(span) < 2 or float(np.mean(span[1:] != span[:-1])) < MIN_CHANGE:
        return None  # steady sound (a tone, a hum): the fingerprint cannot tell copies apart
    shift = alignment.offset * ITEM_SECONDS
    s, e = start + shift, stop + shift
    overlaps = [
        (min(e, a_stop) - max(s, a_start), a_id)
        for a_id, a_start, a_stop in a.slices
        if a_id in kept and min(e, a_stop) > max(s, a_start)
    ]
    if not overlaps or sum(o for o, _ in overlaps) < min_overlap * max(stop - start, 1e-9):
        return None
    return max(overlaps)[1]


@dataclass(frozen=True)
class Settings:
    """The duplicate check's settings (``export.dedup*``)."""

    max_ber: float
    min_overlap: float


def find_duplicates(
    rows: list[dict[str, Any]],
    order: Callable[[dict[str, Any]], tuple[Any, ...]],
    source_hash: Callable[[dict[str, Any]], str],
    slice_hash: Callable[[dict[str, Any]], str],
    units_of: Callable[[list[dict[str, Any]]], list[Unit]],
    settings: Settings,
) -> dict[str, str]:
    """Which rows are duplicates: id -> the reason (``duplicate of <id>``).

    ``rows`` are the candidate slices (``id``, ``source_id``, ``duration``, ``source_offset``,
    ``source_end``); ``order`` sorts a row's source in keep order (earliest first);
    ``source_hash`` / ``slice_hash`` give the sample hashes ('' when unknown); ``units_of``
    fingerprints the rows (grouped by source, in keep order)."""
    rows = sorted(rows, key=lambda r: (*order(r), as_seconds(r.get("source_offset")), r["id"]))
    reasons: dict[str, str] = {}
    # 1. the same decoded source
    first_source: dict[str, str] = {}  # sample hash -> source id
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_source[str(r["source_id"])].append(r)
    for sid, group in by_source.items():
        digest = source_hash(group[0])
        if not digest:
            continue
        earlier = first_source.setdefault(digest, sid)
        if earlier == sid:
            continue
        for r in group:
            twin = _most_overlapping(r, by_source[earlier], reasons)
            reasons[r["id"]] = REASON + (twin or earlier)
    # 2. the same exported samples
    first_slice: dict[str, str] = {}
    for r in rows:
        if r["id"] in reasons:
            continue
        digest = slice_hash(r)
        earlier = first_slice.setdefault(digest, r["id"]) if digest else r["id"]
        if earlier != r["id"]:
            reasons[r["id"]] = REASON + earlier
    # 3. near duplicates, source after source
    remaining = [r for r in rows if r["id"] not in reasons]
    units = units_of(remaining)
    kept = {r["id"] for r in remaining}
    index = Index(units)
    by_name = {u.name: u for u in units}
    for k, unit in enumerate(units):
        for a_name, offset in index.candidates(k):
            a = by_name[a_name]
            if a.rank == unit.rank:
                continue  # the same source: repeats inside one source are not looked for
            alignment = align(a, unit, offset)
            for s in unit.slices:
                if s[0] in reasons:
                    continue
                twin = match_slice(
                    s, unit, a, alignment, kept, settings.max_ber, settings.min_overlap
                )
                if twin is not None:
                    reasons[s[0]] = REASON + twin
                    kept.discard(s[0])
    return reasons


def _most_overlapping(
    row: dict[str, Any], others: list[dict[str, Any]], reasons: dict[str, str]
) -> str | None:
    """The id of the row of ``others`` (the same timeline) that overlaps ``row`` most."""
    s, e = as_seconds(row.get("source_offset")), as_seconds(row.get("source_end"))
    best: tuple[float, str] | None = None
    for o in others:
        if o["id"] in reasons:
            continue
        os_, oe = as_seconds(o.get("source_offset")), as_seconds(o.get("source_end"))
        overlap = min(e, oe) - max(s, os_)
        if overlap > 0 and (best is None or overlap > best[0]):
            best = (overlap, o["id"])
    return None if best is None else best[1]


def as_seconds(value: Any) -> float:
    """A stored time as a float (0.0 when there is none)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if out != out else out


# --- the sidecar: fingerprints and hashes kept between runs ----------------------------------


class Store:
    """``.dedup/`` in the export folder: fingerprints and slice hashes computed once."""

    def __init__(self, out_dir: Path):
        self.root = out_dir / SIDECAR
        self.wavs = self.root / "wavs"
        self._hashes_path = self.root / "hashes.json"
        self.hashes: dict[str, str] = (
            json.loads(self._hashes_path.read_text(encoding="utf-8"))
            if self._hashes_path.is_file()
            else {}
        )
        self.used: set[str] = set()
        self.computed = 0

    def fingerprint(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The stored fingerprint for ``key``, made and stored when there is none."""
        name = hashlib.sha256(key.encode()).hexdigest()[:24] + ".npy"
        self.used.add(name)
        path = self.root / "fingerprints" / name
        if path.is_file():
            return np.load(path).astype(np.uint32)
        fp = make()
        self.computed += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.save(tmp, fp)
        return fp

    def slice_hash(self, key: str, wav: Path) -> str:
        """The sample hash of a slice's WAV, by the slice's key."""
        if key not in self.hashes and wav.is_file():
            self.hashes[key] = pcm_sha256(wav)
        return self.hashes.get(key, "")

    def save(self, keys: Iterable[str]) -> None:
        """Keep the hashes of ``keys`` and the fingerprints used by this run; drop the rest."""
        keep = set(keys)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self._hashes_path,
            json.dumps({k: v for k, v in self.hashes.items() if k in keep}, indent=0) + "\n",
        )
        folder = self.root / "fingerprints"
        if folder.is_dir():
            for path in folder.glob("*.npy"):
                if path.name not in self.used:
                    path.unlink()


def media_key(path: Path) -> str:
    """A media file's identity for the fingerprint store: path, size, modification time."""
    st = path.stat()
    return f"media\0{path}\0{st.st_size}\0{st.st_mtime_ns}"


def move(src: Path, dest: Path) -> None:
    """Move a file (its folder made), replacing ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)


# --- the export stage's hook -----------------------------------------------------------------


def deduplicate(stage: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Re-partition the export folder of ``stage`` (an :class:`export.stage.ExportStage`):
    ``rows`` (its kept rows) and the rows ``rejected.csv`` holds as duplicates are checked
    again with the stage's settings; duplicates go to ``rejected.csv`` (their WAVs to
    ``.dedup/wavs/``), the others to ``manifest.csv`` (their WAVs back to ``wavs/``). Returns
    the kept rows. With ``dedup: false`` every earlier duplicate is kept again."""
    from malmoi.files import temp_dir
    from malmoi.manifest import Table, rejected_model

    out_dir: Path = stage.out_dir
    params = stage.params
    store = Store(out_dir)
    rejected_t = Table(out_dir, rejected_model(stage.row_type))
    rejected = [dict(r.record()) for r in rejected_t.rows()]
    before = [r for r in rejected if str(r["reason"]).startswith(REASON)]
    others = [r for r in rejected if not str(r["reason"]).startswith(REASON)]
    pool = list(rows)
    for r in before:
        if (store.wavs / Path(r["path"]).name).is_file() or (out_dir / r["path"]).is_file():
            pool.append({k: v for k, v in r.items() if k != "reason"})
        else:  # its WAV is gone: it stays rejected (a rerun of its item writes it again)
            others.append(r)

    def wav_of(r: dict[str, Any]) -> Path:
        here = out_dir / r["path"]
        return here if here.is_file() else store.wavs / Path(r["path"]).name

    reasons: dict[str, str] = {}
    if params.dedup and pool:
        require_fpcalc()
        lineage = stage.read_lineage()
        order_of = source_order(pool, lineage)
        with temp_dir(store.root) as tmp:

            def units_of(group: list[dict[str, Any]]) -> list[Unit]:
                return make_units(group, order_of, lineage, store, wav_of, Path(tmp))

            reasons = find_duplicates(
                pool,
                order=lambda r: order_of[str(r["source_id"])],
                source_hash=lambda r: str(lineage.value(r, "audio_sha256") or ""),
                slice_hash=lambda r: store.slice_hash(str(r["key"]), wav_of(r)),
                units_of=units_of,
                settings=Settings(params.dedup_max_ber, params.dedup_min_overlap),
            )
    kept, dups = [], []
    for r in pool:
        rel = out_dir / r["path"]
        aside = store.wavs / Path(r["path"]).name
        if r["id"] in reasons:
            if rel.is_file():
                move(rel, aside)
            dups.append({**r, "reason": reasons[r["id"]]})
        else:
            if not rel.is_file() and aside.is_file():
                move(aside, rel)
            kept.append(r)
    # the tables are rewritten only when the partition changes: a no-op rerun leaves them be
    if {r["id"]: r["reason"] for r in dups} != {r["id"]: r["reason"] for r in before}:
        stage.repartition(kept, others + dups)
    if params.dedup:  # with dedup off the store is left for when it is on again
        store.save(str(r["key"]) for r in pool)
    if store.wavs.is_dir():  # WAVs of duplicates no longer in the folder's tables
        names = {Path(r["path"]).name for r in dups}
        for path in store.wavs.iterdir():
            if path.name not in names:
                path.unlink()
    if params.dedup:
        log.info(
            "export: %d duplicate slice(s) rejected of %d (%d fingerprint(s) computed)",
            len(dups),
            len(pool),
            store.computed,
        )
    return kept


def source_order(rows: list[dict[str, Any]], lineage: Any) -> dict[str, tuple[str, str]]:
    """Each source's place in the keep order: its publication day (the crawl's ``date`` on
    the ingest row; undated sources after dated ones), then its id."""
    out: dict[str, tuple[str, str]] = {}
    for r in rows:
        sid = str(r["source_id"])
        if sid not in out:
            day = str(lineage.value(r, "date") or "")
            out[sid] = (day or "~", sid)  # '~' sorts after any digit
    return out


def make_units(
    rows: list[dict[str, Any]],
    order_of: dict[str, tuple[str, str]],
    lineage: Any,
    store: Store,
    wav_of: Callable[[dict[str, Any]], Path],
    tmp: Path,
) -> list[Unit]:
    """The fingerprinted units of ``rows`` in keep order: one per source whose media is on
    disk, whose slices have source times and whose fingerprint is long enough; else one per
    slice (its exported WAV, padded)."""
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_source[str(r["source_id"])].append(r)
    ranks = {sid: i for i, sid in enumerate(sorted(by_source, key=lambda s: order_of[s]))}
    units: list[Unit] = []
    for sid in sorted(by_source, key=lambda s: ranks[s]):
        group = by_source[sid]
        media = lineage.origin(group[0]).media
        timed = all(
            r.get("source_offset") not in (None, "") and r.get("source_end") not in (None, "")
            for r in group
        )
        fp = np.zeros(0, dtype=np.uint32)
        if timed and media is not None and Path(media).is_file():
            fp = store.fingerprint(media_key(Path(media)), lambda m=Path(media): fpcalc(m))
        if len(fp) >= MIN_ITEMS:
            spans = [
                (r["id"], as_seconds(r["source_offset"]), as_seconds(r["source_end"]))
                for r in group
            ]
            units.append(Unit(f"source\0{sid}", ranks[sid], fp, spans))
            continue
        for r in group:
            wav = wav_of(r)
            fp = store.fingerprint(f"slice\0{r['key']}", lambda w=wav: padded_fingerprint(w, tmp))
            spans = [(r["id"], PAD, PAD + float(r["duration"]))]
            units.append(Unit(f"slice\0{r['id']}", ranks[sid], fp, spans))
    return units
