"""Speaker filter stage: keep the slices of one target voice.

Reads: the previous stage's slices (the segment stage's in the pipeline; any audio files from
the CLI). Each slice is embedded once (Resemblyzer d-vector), with its sliding 1.5-s windows
(:mod:`speaker_filter.turns`), all cached in ``<out>/embeddings/<id>.npz`` (with the input's
fingerprint), and the audio linked (hard link, else copied) to ``<out>/<parent id>/<id>.<ext>``.
Where the voice may change inside a slice, its candidate parts are rows too (``part_of``; their
embeddings are the means of their windows); a part kept is written as
``<out>/<parent id>/<part id>.<ext>``. A slice the segment stage already embedded
(``gender_engine: embedding``) is not embedded again: its embedding is taken from the segment
folder's ``embeddings.npz`` when that file was written by the same segment work (its key is the
slice row's key, the item's fingerprint). Every row carries ``similarity`` (cosine to the
profile's enrollment), ``score`` (AS-norm against the cohort) and ``threshold``; kept and
rejected slices are both listed, the rejected with the reason.

The threshold is not part of the items' keys: after the loop, :meth:`after_run` scores every
slice (or its parts) from the cached embeddings, picks the threshold (a pluggable rule, see
:mod:`speaker_filter.score`), makes it length-aware, and re-partitions ``manifest.csv`` /
``rejected.csv`` / ``progress.csv`` (kept slices of one track then joined across short pauses,
:mod:`speaker_filter.join`: ``joined`` lists them, the join's audio is cut from the track into
``<out>/<parent id>/<first id>+<n>.<ext>``); it writes ``threshold.json`` (value, rule, reason,
settings) and ``scores.png`` (histogram, kept vs rejected, with the threshold). So a threshold
change moves rows without computing any embedding; a new profile recomputes the scores (the
items' keys hold its digest) but still reads the embeddings from the cache. With ``dominant``
the slices of the run are clustered and the largest cluster's embeddings become the profile.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf
from pydantic import Field

from malmoi.audio import write_wav_like
from malmoi.config import SpeakerFilterConfig, resolve_profiles_dir
from malmoi.errors import ItemError
from malmoi.files import atomic_path, atomic_write_text
from malmoi.ids import child_id, short_hash
from malmoi.logs import get_logger
from malmoi.manifest import (
    AudioRow,
    Table,
    read_record,
    rejected_model,
)
from malmoi.stage import Item, PassesSlicesOn, Result, Stage, StageReport
from speaker_filter import join, turns
from speaker_filter.cohort import Cohort, bundled_cohort, unit
from speaker_filter.profile import (
    Profile,
    build_profile,
    load_profile,
    profile_meta_digest,
    references_digest,
)
from speaker_filter.score import (
    LONG,
    RULES,
    SHORT,
    TOP_K,
    LengthCut,
    RunScores,
    Threshold,
    ThresholdRule,
    cohort_stats,
    length_cut,
    model_values,
    pick_threshold,
    score,
)

log = get_logger(__name__)

NO_SPEECH = "too little speech to embed"
WAITING = "not scored yet (the run's threshold is chosen after every slice is embedded)"
BATCH = 64  # slices embedded per call (their partial utterances batched by the Embedder)
CLUSTER_CUT = 0.35  # cosine distance, average linkage (dominant)
RUN_PROFILE = "profile"  # the profile of the run, saved in the stage folder
UPSTREAM = "embeddings.npz"  # the segment stage's embeddings, beside its slices
BUNDLES = "bundles"  # under embeddings/: per track folder, the analyses after_run reads


class SpeakerRow(AudioRow):
    """A slice with its similarity to the target voice."""

    start: float | None = Field(None, description="seconds into the source track (slices)")
    stop: float | None = None
    gender: str = Field("", description="as the segment stage told it")
    similarity: float | None = Field(None, description="cosine to the profile's enrollment")
    score: float | None = Field(None, description="AS-norm score against the cohort (or cosine)")
    self_similarity: float | None = Field(
        None,
        description="cosine to the run's own enrollment of its surest slices (threshold auto)",
    )
    threshold: float | None = Field(
        None,
        description="the slice's threshold (on self_similarity with auto, else on score): the "
        "run's cut, lower for a slice with less than 4 s of speech",
    )
    part_of: str = Field(
        "", description="the slice this part was cut from where the voice changes ('' if whole)"
    )
    joined: str = Field(
        "",
        description="the kept slices (or parts) this slice joins across short pauses, "
        "space-separated ('' if none)",
    )


class SpeakerFilterStage(PassesSlicesOn, Stage[SpeakerFilterConfig, SpeakerRow]):
    """Embed each slice (cached), score it against the target profile, keep the target's."""

    name: ClassVar[str] = "speaker_filter"
    version: ClassVar[str] = "2"  # 2: sliding windows, parts where the voice changes
    row_type: ClassVar[type[SpeakerRow]] = SpeakerRow
    settings_file: ClassVar[str] = "threshold.json"
    # the profile enters the key by its digest (clip hashes), the threshold not at all
    unkeyed_params: ClassVar[frozenset[str]] = frozenset(
        {"references", "profile", "profiles_dir", "threshold", "join_gap", "join_max"}
    )

    def __init__(
        self,
        params: SpeakerFilterConfig,
        out_dir: Path,
        rules: dict[str, ThresholdRule] | None = None,
    ):
        super().__init__(params, out_dir)
        if not params.used:
            raise ValueError("speaker_filter needs references, a profile or dominant")
        self.rules = RULES if rules is None else rules
        self.embedder: Any = None
        self.profile: Profile | None = None
        self.cohort: Cohort | None = None
        self.embedded = 0  # slices embedded by this process (the rest came from the cache)
        self._digest: str | None = None
        # segment folders' embeddings.npz, read once a run: path -> (key, id -> (frames, emb))
        self._upstreams: dict[Path, tuple[str, dict[str, tuple[int, np.ndarray]]]] = {}

    # --- keys ---------------------------------------------------------------------------------

    @property
    def digest(self) -> str:
        """What the scores depend on besides the slice: the profile's clips (or 'dominant')."""
        if self._digest is None:
            p = self.params
            if p.references:
                self._digest = references_digest(p.references)
            elif p.profile:
                self._digest = profile_meta_digest(p.profile, resolve_profiles_dir(p))
            else:
                self._digest = "dominant"
        return self._digest

    def key_extra(self) -> list[Any]:
        return [self.digest]

    # --- model and profile --------------------------------------------------------------------

    def _embedder(self) -> Any:
        if self.embedder is None:
            from malmoi.embedding import Embedder

            self.embedder = Embedder()
        return self.embedder

    def _cohort(self) -> Cohort | None:
        if self.params.cohort and self.cohort is None:
            self.cohort = bundled_cohort()
        return self.cohort if self.params.cohort else None

    def _profile(self) -> Profile | None:
        """The target's profile (None with dominant): the run's copy in the stage folder when
        its digest matches, else built from the references (saved under ``profile`` when
        named) or loaded by name."""
        p = self.params
        if self.profile is not None or not (p.references or p.profile):
            return self.profile
        here = self.out_dir / f"{RUN_PROFILE}.json"
        if (
            here.exists()
            and json.loads(here.read_text(encoding="utf-8")).get("digest") == self.digest
        ):
            self.profile = load_profile(RUN_PROFILE, self.out_dir)
            return self.profile
        if p.references:
            prof = build_profile(p.profile or "references", p.references, self._embedder())
            if p.profile:
                prof.save(resolve_profiles_dir(p))
        else:
            assert p.profile is not None
            prof = load_profile(p.profile, resolve_profiles_dir(p))
        self.profile = prof
        Profile(RUN_PROFILE, prof.refs, prof.crops, prof.crop_ref, prof.clips, prof.recipe).save(
            self.out_dir, quiet=True
        )
        return prof

    def setup(self) -> None:
        """Cohort and profile (in every process that scores slices: with ``runner: dask``, each
        worker reads the run's profile that :meth:`prepare` saved in the stage folder)."""
        self._cohort()
        self._profile()

    def prepare(self, items: list[Item]) -> None:
        """Before the loop, in its process: cohort, profile and the batched embedding of the
        slices not cached yet (so :meth:`process`, here or on a worker, reads each from the
        cache). The encoder is loaded only when something needs embedding: ``--rescore``
        never loads it."""
        self._cohort()
        self._profile()
        self._prefetch(items)

    def _prefetch(self, items: list[Item]) -> None:
        """Analyse (and cache) the items without a valid cache, ``BATCH`` slices per batch of
        the encoder; an unreadable file is left for :meth:`process` to report."""
        todo = [i for i in items if self._cached_for(i) is None]
        for a in range(0, len(todo), BATCH):
            self._analyse(todo[a : a + BATCH], quiet=True)
            log.info(
                "speaker_filter: embedded %d of %d slices", min(a + BATCH, len(todo)), len(todo)
            )

    def _analyse(self, items: list[Item], quiet: bool = False) -> None:
        """Embed ``items`` (the whole slice, unless the segment stage did) and their sliding
        windows (:mod:`speaker_filter.turns`), in one batch, and cache both. An unreadable
        file raises ItemError, or is skipped when ``quiet``."""
        from resemblyzer.audio import wav_to_mel_spectrogram

        enc = self._embedder()
        done, whole, speech, mels, owners, frames = [], [], [], [], [], []
        for item in items:
            try:
                wav, sr = sf.read(str(item.path), dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                if quiet:
                    continue
                raise ItemError(f"{item.shown}: cannot read the audio ({exc})") from None
            x, index = enc.speech(wav.mean(axis=1), sr)
            n = len(x) // turns.MEL_HOP + 1 if len(x) else 0
            fr = turns.window_frames(n)
            if fr:
                mel = wav_to_mel_spectrogram(x)
                mels += [mel[lo:hi] for lo, hi in fr]
                owners += [len(done)] * len(fr)
            at = np.minimum(np.arange(n + 1) * turns.MEL_HOP, max(len(index) - 1, 0))
            frame_time = index[at] / turns.SR if len(index) else np.zeros(n + 1)
            done.append((item, frame_time.astype(np.float32), len(x) / turns.SR))
            frames.append(np.asarray(fr, dtype=np.int32).reshape(-1, 2))
            speech.append(x)
            whole.append(self._upstream(item))
        if not done:
            return
        todo = [k for k, e in enumerate(whole) if e is None]
        emb = enc.embed_preprocessed([speech[k] for k in todo]) if todo else []
        for k, e in zip(todo, emb, strict=True):
            whole[k] = e
        self.embedded += len(todo)
        win = enc.embed_frames(mels) if mels else np.zeros((0, 256), np.float32)
        owner = np.asarray(owners, dtype=np.int64)
        for k, (item, frame_time, seconds) in enumerate(done):
            self._store(
                item.id,
                item.fingerprint,
                whole[k],
                seconds,
                win=win[owner == k],
                win_frames=frames[k],
                frame_time=frame_time,
            )

    # --- per slice ----------------------------------------------------------------------------

    def analysis(self, item: Item) -> dict[str, np.ndarray]:
        """The slice's cached analysis (embedding, windows), made now when there is none."""
        cached = self._cached_for(item)
        if cached is None:
            self._analyse([item])
            cached = self._cached_for(item)
            assert cached is not None
        return cached

    def _cached_for(self, item: Item) -> dict[str, np.ndarray] | None:
        """The cached analysis of ``item`` when made from the same input, else None."""
        cached = self._cache(item.id)
        if str(cached.get("fingerprint", "")) == item.fingerprint and "win" in cached:
            return cached
        return None

    def _upstream(self, item: Item) -> np.ndarray | None:
        """The embedding the segment stage made of ``item``: from ``embeddings.npz`` beside the
        slice when that file's key is the item's fingerprint (the segment row's key: the same
        segment work on the same input made this very slice) and the slice on disk has the
        length it had, else None."""
        if not item.fingerprint:
            return None
        path = item.path.parent / UPSTREAM
        if path not in self._upstreams:
            self._upstreams[path] = _read_upstream(path)
        key, by_id = self._upstreams[path]
        if key != item.fingerprint or item.id not in by_id:
            return None
        frames, emb = by_id[item.id]
        try:
            if sf.info(str(item.path)).frames != frames:
                return None
        except (sf.LibsndfileError, RuntimeError, OSError):
            return None  # process() reports it
        return emb

    def _store(
        self, slice_id: str, fingerprint: str, emb: np.ndarray, speech: float, **more: np.ndarray
    ) -> None:
        cache = self.out_dir / "embeddings" / f"{slice_id}.npz"
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, tmp.open("wb") as fh:
            np.savez(
                fh, emb=emb, fingerprint=np.array(fingerprint), speech=np.array(speech), **more
            )

    def _scores(self, emb: np.ndarray) -> tuple[float | None, float | None]:
        """(similarity, score) against the profile; None without speech or a profile."""
        if np.isnan(emb).any() or self._profile() is None:
            return None, None
        s1, s2 = score(self._profile().enroll, emb[None, :], self._cohort())  # type: ignore[union-attr]
        return round(float(s1[0]), 4), round(float(s2[0]), 4)

    def process(self, item: Item) -> Result[SpeakerRow]:
        """The slice, passed on (linked), and its candidate parts where the voice may change
        (:mod:`speaker_filter.turns`): every run of consecutive parts, each with its embedding
        (the mean of its windows) cached. All stand rejected until :meth:`after_run` judges
        them."""
        z = self.analysis(item)
        emb = z["emb"]
        info = sf.info(str(item.path))
        rel = self.link_input(item)
        sim, sc = self._scores(emb)
        row = self.make_row(
            item,
            id=item.id,
            parent_id=str(item.row.get("parent_id") or ""),
            path=rel,
            frames=info.frames,
            sample_rate=info.samplerate,
            channels=info.channels,
            similarity=sim,
            score=sc,
        )
        # the partition is after_run's: until then a slice stands rejected (never passed on
        # unfiltered by an interrupted run)
        result: Result[SpeakerRow] = Result(
            rejected=[(row, NO_SPEECH if np.isnan(emb).any() else WAITING)]
        )
        frames, win, frame_time = z["win_frames"], z["win"], z["frame_time"]
        n = len(frame_time) - 1
        changes = turns.change_points(*turns.distance_curve(frames, win, n)) if len(win) else []
        if not changes:
            return result
        wav, sr = sf.read(str(item.path), dtype="float32", always_2d=True)
        pieces = turns.pieces(
            changes, frame_time, turns.frame_energy(wav.mean(axis=1), sr), len(wav) / sr
        )
        start = float(item.row.get("start") or 0.0)
        for a, b in turns.groups(len(pieces)):
            pid = child_id(item.id, f"{a + 1}" if a == b else f"{a + 1}-{b + 1}")
            lo, hi = pieces[a].lo, pieces[b].hi
            pemb = turns.side(frames, win, lo, hi)
            if pemb is None:
                continue
            pcache = self._cache(pid)
            if str(pcache.get("fingerprint", "")) != item.fingerprint:  # else made already
                self._store(pid, item.fingerprint, pemb, (hi - lo) * turns.MEL_HOP / turns.SR)
            sim, sc = self._scores(pemb)
            a_s, b_s = pieces[a].start, pieces[b].stop
            part = self.make_row(
                item,
                id=pid,
                parent_id=item.id,
                part_of=item.id,
                path=f"{Path(rel).parent}/{pid}{item.path.suffix.lower()}",
                frames=round((b_s - a_s) * info.samplerate),
                sample_rate=info.samplerate,
                channels=info.channels,
                start=round(start + a_s, 4),
                stop=round(start + b_s, 4),
                similarity=sim,
                score=sc,
            )
            result.rejected.append((part, WAITING))
        return result

    # --- after the loop: threshold and partition ----------------------------------------------

    def after_run(self, report: StageReport) -> None:
        """Threshold and partition over the whole folder: the slices' scores pick the run's
        cut (a rule of :mod:`speaker_filter.score`), their 1.5-s windows make it length-aware
        (:class:`~speaker_filter.score.LengthCut`), and a slice whose candidate parts fall on
        both sides of the cut is replaced by its kept parts (written now, cut from the slice)."""
        self._upstreams = {}  # the segment folders' embeddings, read again by the next run
        kept_t = Table(self.out_dir, SpeakerRow)
        rej_t = Table(self.out_dir, rejected_model(SpeakerRow))
        records = kept_t.records() + rej_t.records()
        if not records:
            return
        records = [r for r in records if not r.get("joined")]  # joins are made again below
        for rec in records:
            rec.pop("reason", None)
        wholes = [r for r in records if not r.get("part_of")]
        parts_of: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            if r.get("part_of"):
                parts_of.setdefault(str(r["part_of"]), []).append(r)
        caches, bundles = self._analyses(records)
        # the units the run's cut is chosen on: a slice, or, where the voice may change inside
        # it, each of its single parts (so a straddling slice is not one voice in the model)
        singles = {
            w["id"]: sorted(
                (p for p in parts_of.get(w["id"], []) if "-" not in p["id"].rsplit(".", 1)[-1]),
                key=lambda p: float(p["start"]),
            )
            for w in wholes
        }
        whole_emb = np.stack([caches[w["id"]]["emb"] for w in wholes])
        note = ""
        if self.params.dominant and not (self.params.references or self.params.profile):
            profile, note = dominant_profile(whole_emb[~np.isnan(whole_emb).any(axis=1)])
        else:
            profile = self._profile()
            assert profile is not None
        cohort = self._cohort()
        whole_at = {str(w["id"]): k for k, w in enumerate(wholes)}
        windows = sum(int(caches[w["id"]].get("windows", 0)) for w in wholes)

        def window_values(thr: Threshold, run: RunScores) -> tuple[np.ndarray, np.ndarray]:
            """``thr``'s column for the slices' full 1.5-s windows, and the whole slice each
            belongs to (its index in ``wholes``): read bundle by bundle."""
            values, owners = [], []
            for path in bundles:
                with np.load(path, allow_pickle=False) as z:
                    if not len(z["win_of"]):
                        continue
                    at = np.array([whole_at.get(str(i), -1) for i in z["ids"]], dtype=np.int64)
                    k = at[z["win_of"]]
                    sel = k >= 0
                    if not sel.any():
                        continue
                    stats = z["win_stats"][sel] if cohort is not None else None
                    win = z["win"][sel]
                values.append(
                    model_values(
                        thr, run, profile.enroll, cohort, win, np.full(len(win), -1), stats
                    )
                )
                owners.append(k[sel])
            if not values:
                return np.zeros(0), np.zeros(0, dtype=np.int64)
            return np.concatenate(values), np.concatenate(owners)

        def stats_of(rows: list[dict[str, Any]], emb: np.ndarray) -> np.ndarray | None:
            """The rows' cohort statistics: stored, or computed now (a join's embedding)."""
            if cohort is None:
                return None
            found = [caches[r["id"]].get("stats") for r in rows]
            if all(f is not None for f in found):
                return np.stack(found).reshape(-1, 2)
            return cohort_stats(emb, cohort)

        def calibrate(split: set[str]) -> dict[str, Any]:
            """The run's cut on its units: each slice, or the single parts of those in
            ``split``; made length-aware on the slices' 1.5-s windows."""
            units = [u for w in wholes for u in (singles[w["id"]] if w["id"] in split else [w])]
            emb = np.stack([caches[u["id"]]["emb"] for u in units])
            ok = ~np.isnan(emb).any(axis=1)
            sim = np.full(len(units), np.nan)
            scores = np.full(len(units), np.nan)
            stats = None
            if ok.any():
                stats = stats_of([u for u, o in zip(units, ok, strict=True) if o], emb[ok])
                sim[ok], scores[ok] = score(profile.enroll, emb[ok], cohort, stats)
            run = RunScores(emb[ok], sim[ok], scores[ok], stats)
            thr = pick_threshold(self.params.threshold, profile, cohort, run, self.rules)
            values = np.full(len(units), np.nan)
            if ok.any():
                values[ok] = run.score if thr.values is None else thr.values
            cut, wkeep = LengthCut(thr.value), np.zeros(0, dtype=bool)
            if windows and thr.rule != "given":  # a number given is the cut for every length
                wv, wk = window_values(thr, run)
                unit_keep = {u["id"]: bool(values[i] >= thr.value) for i, u in enumerate(units)}
                whole_keep = np.array(
                    [
                        any(unit_keep[u["id"]] for u in (singles[w["id"]] if w["id"] in split
                                                         else [w]))
                        for w in wholes
                    ]
                )  # fmt: skip
                wkeep = whole_keep[wk]
                cut = length_cut(thr, wv[wkeep], wv[~wkeep])
            return {
                "units": units, "ok": ok, "sim": sim, "scores": scores, "run": run,
                "thr": thr, "values": values, "cut": cut, "wkeep": wkeep,
                "at": {u["id"]: k for k, u in enumerate(units)},
            }  # fmt: skip

        def mixed(c: dict[str, Any]) -> set[str]:
            """The slices whose single parts fall on both sides of their cuts under
            calibration ``c`` (all parts judged at once)."""
            parts = [(w["id"], p) for w in wholes for p in singles[w["id"]]]
            if not parts:
                return set()
            rows = [p for _, p in parts]
            e = np.stack([caches[p["id"]]["emb"] for p in rows])
            bad = {w for (w, _), nan in zip(parts, np.isnan(e).any(axis=1), strict=True) if nan}
            own = np.full(len(e), -1)
            v = model_values(c["thr"], c["run"], profile.enroll, cohort, e, own, stats_of(rows, e))
            keep = v >= c["cut"].at([_speech(caches[p["id"]], p) for p in rows])
            sides: dict[str, set[bool]] = {}
            for (w, _), k in zip(parts, keep.tolist(), strict=True):
                sides.setdefault(w, set()).add(k)
            return {w for w, found in sides.items() if len(found) == 2 and w not in bad}

        # pass 1 on the slices; pass 2 with the slices whose parts pass 1 told apart as units
        first = calibrate(set())
        split = mixed(first)
        c = calibrate(split) if split else first
        units, ok, sim, scores = c["units"], c["ok"], c["sim"], c["scores"]
        run, thr, values, cut, wkeep = c["run"], c["thr"], c["values"], c["cut"], c["wkeep"]
        unit_at = c["at"]

        def judge(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
            """(value in thr's column, score) of rows that are not units (groups of parts, a
            split slice as a whole), from their cached embeddings."""
            e = np.stack([caches[r["id"]]["emb"] for r in rows])
            own = np.full(len(rows), -1)
            stats = stats_of(rows, e)
            v = model_values(thr, run, profile.enroll, cohort, e, own, stats)
            return v, score(profile.enroll, e, cohort, stats)[1]

        kept, rejected = [], []
        setting = self.params.threshold

        def below(v: float, c: float) -> str:
            return f"{thr.column} {v:.3f} below threshold {c:.3f} ({setting}: {thr.rule})"

        def fill(rec: dict[str, Any], v: float, s_: float, c: float) -> None:
            rec.update(
                score=round(float(s_), 4),
                self_similarity=None if thr.values is None else round(float(v), 4),
                threshold=round(float(c), 4),
            )

        for rec in wholes:
            parts = parts_of.get(rec["id"], [])
            ones = singles[rec["id"]] if rec["id"] in split else []
            if not ones:
                why = "the slice is one voice (its parts are judged alike)"
                rejected += [{**_clean(p), "threshold": None, "reason": why} for p in parts]
                k = unit_at[rec["id"]]
                if not ok[k]:
                    rec.update(similarity=None, score=None, self_similarity=None)
                    rejected.append({**rec, "threshold": round(thr.value, 4), "reason": NO_SPEECH})
                    continue
                c = float(cut.at(_speech(caches[rec["id"]], rec)))
                fill(rec, values[k], scores[k], c)
                rec["similarity"] = round(float(sim[k]), 4)
                if values[k] >= c:
                    kept.append(rec)
                else:
                    rejected.append({**rec, "reason": below(values[k], c)})
                continue
            # a slice with candidate parts: its parts are units; it and their groups are judged
            others = [rec] + [p for p in parts if p not in ones]
            ov, os_ = judge(others)
            for r, v, s_ in zip(others, ov, os_, strict=True):
                r["_value"] = float(v)
                fill(r, v, s_, float(cut.at(_speech(caches[r["id"]], r))))
            for p in ones:
                k = unit_at[p["id"]]
                c = float(cut.at(_speech(caches[p["id"]], p)))
                p["_value"] = float(values[k]) if ok[k] else -np.inf
                fill(p, values[k] if ok[k] else np.nan, scores[k] if ok[k] else np.nan, c)
            labels = [p["_value"] >= float(p["threshold"]) for p in ones]
            if all(labels) or not any(labels):  # no change of voice: the slice is judged
                if all(labels) or rec["_value"] >= float(rec["threshold"]):
                    kept.append(_clean(rec))
                else:
                    rejected.append(
                        {**_clean(rec), "reason": below(rec["_value"], rec["threshold"])}
                    )
                why = "the slice is one voice (its parts are judged alike)"
                rejected += [{**_clean(p), "reason": why} for p in parts]
                continue
            # the voice changes inside: keep each run of consecutive kept parts as one row
            runs, first = [], None
            for i, keep_i in enumerate([*labels, False]):
                if keep_i and first is None:
                    first = i
                elif not keep_i and first is not None:
                    runs.append((first, i - 1))
                    first = None
            chosen = {child_id(rec["id"], f"{a + 1}" if a == b else f"{a + 1}-{b + 1}")
                      for a, b in runs}  # fmt: skip
            for p in parts:
                if p["id"] in chosen:
                    kept.append(_clean(p))
                    self._write_part(rec, p)
                elif p in ones and p["_value"] < float(p["threshold"]):
                    rejected.append({**_clean(p), "reason": below(p["_value"], p["threshold"])})
                else:
                    rejected.append({**_clean(p), "reason": "overlaps a kept part"})
            rejected.append(
                {
                    **_clean(rec),
                    "reason": f"the voice changes inside: kept {', '.join(sorted(chosen))}",
                }
            )
        kept, rejected = self._join(kept, rejected, {w["id"]: w for w in wholes}, caches, judge)
        self.repartition_linked(kept, rejected, report)
        report.rejected_by_reason = {}
        for r in rejected:
            key = r["reason"] if r["reason"] == NO_SPEECH else r["reason"].split(" (")[0]
            key = f"{thr.column} below threshold" if "below threshold" in key else key
            key = "the voice changes inside" if key.startswith("the voice changes") else key
            key = "joined" if key.startswith("joined into") else key
            report.rejected_by_reason[key] = report.rejected_by_reason.get(key, 0) + 1
        info = {
            "value": thr.value,
            "column": thr.column,
            "rule": thr.rule,
            "reason": thr.reason,
            "short_value": cut.short,
            "length_aware": (
                f"slices of {SHORT:g} s of speech or less are cut at {cut.short:.3f}, from "
                f"{LONG:g} s on at {thr.value:.3f}, linearly in between (1.5-s windows: "
                f"{int(wkeep.sum())} of kept slices, {int((~wkeep).sum())} of rejected)"
                if cut.short is not None
                else "one cut for every length (too few windows to calibrate)"
            ),
            "setting": self.params.threshold,
            "settings": self.settings(),
            "kept": len(kept),
            "rejected": len(rejected),
            "split": sum(1 for r in rejected if r["reason"].startswith("the voice changes")),
            "joined": sum(1 for r in kept if r.get("joined")),
            "no_speech": int((~ok).sum()),
        }
        if note:
            info["dominant"] = note
        atomic_write_text(self.out_dir / "threshold.json", json.dumps(info, indent=1) + "\n")
        log.info(
            "speaker_filter: threshold %.3f (%s); %d kept, %d rejected%s",
            thr.value,
            thr.describe(),
            len(kept),
            len(rejected),
            f"; {note}" if note else "",
        )
        plot_scores(
            values[ok],
            np.array([r["id"] for r in kept]),
            np.array([u["id"] for u in units])[ok],
            thr,
            self.out_dir / "scores.png",
        )

    def _join(
        self,
        kept: list[dict[str, Any]],
        rejected: list[dict[str, Any]],
        wholes: dict[str, dict[str, Any]],
        caches: dict[str, dict[str, Any]],
        judge: Callable[[list[dict[str, Any]]], tuple[np.ndarray, np.ndarray]],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Kept rows of one track joined across short pauses (:mod:`speaker_filter.join`): each
        join is a new kept row cut from the track, its slices rejected as joined into it."""
        if self.params.join_gap <= 0 or len(kept) < 2:
            return kept, rejected
        inputs = read_record(self.out_dir).get("inputs", [])
        paths, segment_rejected = join.tracks(
            [self.out_dir / p for p in inputs if isinstance(p, str)]
        )

        def whole_of(rec: dict[str, Any]) -> dict[str, Any]:
            return wholes.get(str(rec.get("part_of") or ""), rec)

        def track(rec: dict[str, Any]) -> str:
            return str(whole_of(rec).get("parent_id") or "")

        keptish = {r["id"] for r in kept}
        by_id_all = {r["id"]: r for r in kept}
        by_track: dict[str, list[dict[str, Any]]] = {}
        for r in kept:
            by_track.setdefault(track(r), []).append(r)
        blockers: dict[str, list[tuple[float, float]]] = {}
        for r in rejected:  # what lies in a pause: another voice, a part cut away
            why = str(r.get("reason", ""))
            if r["id"] in keptish or r.get("start") in (None, ""):
                continue
            if "below threshold" in why or why == NO_SPEECH:
                blockers.setdefault(track(r), []).append((float(r["start"]), float(r["stop"])))
        out_kept, joined_away = [], {}
        for tid, rows in by_track.items():
            src = join.track_path(whole_of(rows[0]), paths) if tid else None
            if src is None:  # files given as they are, or a track not on disk: no joins
                continue
            spans = [join.Span(r["id"], float(r["start"]), float(r["stop"])) for r in rows
                     if r.get("start") not in (None, "")]  # fmt: skip
            found = join.runs(
                spans,
                blockers.get(tid, []) + segment_rejected.get(tid, []),
                self.params.join_gap,
                self.params.join_max,
            )
            by_id = {r["id"]: r for r in rows}
            for run in found:
                members = [by_id[s.id] for s in run]
                first = members[0]
                jid = join.joined_id(first["id"], len(members))
                emb = np.mean([unit(caches[m["id"]]["emb"]) for m in members], axis=0)
                caches[jid] = {"emb": emb}
                row = {
                    **_clean(first),
                    "id": jid,
                    "parent_id": whole_of(first)["id"],
                    "part_of": "",
                    "joined": " ".join(m["id"] for m in members),
                    "key": short_hash(" ".join(str(m["key"]) for m in members)),
                    "path": f"{Path(first['path']).parent}/{jid}{Path(first['path']).suffix}",
                    "start": run[0].start,
                    "stop": run[-1].stop,
                }
                row["duration"] = self._write_join(src, row)
                row["threshold"] = min(float(m["threshold"]) for m in members)
                out_kept.append(row)
                for m in members:
                    joined_away[m["id"]] = jid
        if out_kept:  # the joins judged together (each on its own embedding)
            v, s_ = judge(out_kept)
            for k, row in enumerate(out_kept):
                first = by_id_all[row["joined"].split()[0]]
                row.update(
                    score=round(float(s_[k]), 4),
                    self_similarity=(
                        None if first.get("self_similarity") is None else round(float(v[k]), 4)
                    ),
                )
        kept = [r for r in kept if r["id"] not in joined_away] + out_kept
        rejected = rejected + [
            {**_clean(r), "reason": f"joined into {joined_away[r['id']]}"}
            for rows in by_track.values()
            for r in rows
            if r["id"] in joined_away
        ]
        return kept, rejected

    def _write_join(self, track: Path, row: dict[str, Any]) -> float:
        """The join's audio, cut from its track (pauses and all), once; its duration."""
        return self._cut(track, row, float(row["start"]), float(row["stop"]) - float(row["start"]))

    def _write_part(self, whole: dict[str, Any], part: dict[str, Any]) -> None:
        """The part's audio, cut from the slice's file (its input, or its link here), once."""
        src = self._linked.get(whole["path"], self.out_dir / whole["path"])
        offset = float(part["start"]) - float(whole["start"] or 0.0)
        self._cut(src, part, offset, float(part["duration"]))

    def _cut(self, src: Path, row: dict[str, Any], offset: float, seconds: float) -> float:
        """Write ``row``'s file (unless it exists): ``seconds`` of ``src`` from ``offset``, in
        ``src``'s format; the seconds it holds (whole samples)."""
        dest = self.out_dir / row["path"]
        self._linked[row["path"]] = dest
        with sf.SoundFile(str(src)) as fin:
            a = round(offset * fin.samplerate)
            n = round((offset + seconds) * fin.samplerate) - a
            if not dest.exists():
                fin.seek(max(0, a))
                write_wav_like(dest, fin.read(n, dtype="float32", always_2d=True), fin)
            return n / fin.samplerate

    # --- the analyses after_run reads: one bundle per track folder --------------------------------

    def _bundle_path(self, folder: str) -> Path:
        return self.out_dir / "embeddings" / BUNDLES / f"{folder}.npz"

    def _analyses(
        self, records: list[dict[str, Any]]
    ) -> tuple[dict[str, dict[str, Any]], list[Path]]:
        """What :meth:`after_run` needs of every row's analysis (embedding, seconds of speech,
        cohort statistics: :func:`~speaker_filter.score.cohort_stats`) by id, and the bundles
        whose full 1.5-s windows calibrate the cut. One bundle per track folder
        (``embeddings/bundles/<folder>.npz``), made from the rows' caches
        (``embeddings/<id>.npz``) when none matches: made again when a row of the folder was
        processed in this run, its rows or their keys changed, or the cohort did. So a run
        reads one file per track, not one per slice, and compares only new slices with the
        cohort; bundles of folders no longer in the tables are removed."""
        cohort = self._cohort()
        made_for = _cohort_digest(cohort)
        by_folder: dict[str, dict[str, str]] = {}
        for r in records:
            by_folder.setdefault(_bundle_name(r), {})[str(r["id"])] = str(r["key"])
        fresh = {Path(rel).parent.name for rel in self._linked}
        caches: dict[str, dict[str, Any]] = {}
        paths = []
        for folder, keys in by_folder.items():
            path = self._bundle_path(folder)
            got = None if folder in fresh else _read_bundle(path, keys, made_for)
            if got is None:
                self._make_bundle(path, keys, cohort, made_for)
                got = _read_bundle(path, keys, made_for)
                assert got is not None
            caches.update(got)
            paths.append(path)
        folder = self.out_dir / "embeddings" / BUNDLES
        if folder.is_dir():
            for old in set(folder.glob("*.npz")) - set(paths):
                old.unlink()
        return caches, paths

    def _make_bundle(
        self, path: Path, keys: dict[str, str], cohort: Cohort | None, made_for: str
    ) -> None:
        """Write the bundle of a folder's rows (``keys``: id -> row key) from their caches."""
        ids = list(keys)
        caches = [self._cache(i) for i in ids]
        emb = np.stack([np.asarray(c["emb"], dtype=np.float64) for c in caches])
        speech = np.array([float(c["speech"]) if "speech" in c else np.nan for c in caches])
        full = [turns.full_windows(c) for c in caches]
        win_of = np.array([k for k, w in enumerate(full) for _ in range(len(w))], dtype=np.int64)
        win = np.concatenate(full) if len(win_of) else np.zeros((0, 256), dtype=np.float32)
        data: dict[str, np.ndarray] = {
            "ids": np.array(ids, dtype=str),
            "keys": np.array([keys[i] for i in ids], dtype=str),
            "cohort": np.array(made_for),
            "emb": emb,
            "speech": speech,
            "win": win,
            "win_of": win_of,
        }
        if cohort is not None:
            data["stats"] = cohort_stats(emb, cohort)
            data["win_stats"] = (
                cohort_stats(win, cohort) if len(win) else np.zeros((0, 2), dtype=np.float64)
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **data)

    def _cache(self, slice_id: str) -> dict[str, Any]:
        """What ``embeddings/<slice_id>.npz`` holds; a NaN embedding when it is absent or
        unreadable (a slice's analysis is then made again, a part's on its slice's next run)."""
        path = self.out_dir / "embeddings" / f"{slice_id}.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            except (OSError, ValueError):
                log.warning("%s: unreadable embedding cache, computing again", slice_id)
        return {"emb": np.full(256, np.nan, dtype=np.float32)}

    def settings(self) -> dict[str, Any]:
        """What the partition depends on beyond the items' keys."""
        return {
            "threshold": self.params.threshold,
            "digest": self.digest,
            "cohort": self.params.cohort,
            "dominant": self.params.dominant,
            "join": [self.params.join_gap, self.params.join_max],
            "version": self.version,
        }


def _bundle_name(row: dict[str, Any]) -> str:
    """The bundle a row's analysis goes to: the folder its file is linked in (its track's)."""
    return Path(str(row.get("path") or "")).parent.name or "_"


def _cohort_digest(cohort: Cohort | None) -> str:
    """What the cohort statistics of a bundle were computed with ('' without a cohort)."""
    if cohort is None:
        return ""
    data = np.ascontiguousarray(cohort.emb, dtype=np.float64).tobytes()
    return hashlib.sha256(data + f"top{TOP_K}".encode()).hexdigest()[:16]


def _read_bundle(
    path: Path, keys: dict[str, str], made_for: str
) -> dict[str, dict[str, Any]] | None:
    """The analyses of a bundle by id, when it holds exactly the rows ``keys`` (id -> key)
    with the cohort ``made_for``; else None (none, unreadable, or made for other rows)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["cohort"]) != made_for:
                return None
            ids = [str(i) for i in z["ids"]]
            if dict(zip(ids, (str(k) for k in z["keys"]), strict=True)) != keys:
                return None
            emb, speech = z["emb"], z["speech"]
            stats = z["stats"] if made_for else None
            windows = np.bincount(z["win_of"], minlength=len(ids))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s: unreadable analysis bundle, making it again (%s)", path, exc)
        return None
    out: dict[str, dict[str, Any]] = {}
    for k, i in enumerate(ids):
        cache: dict[str, Any] = {"emb": emb[k], "windows": int(windows[k])}
        if not np.isnan(speech[k]):
            cache["speech"] = speech[k]
        if stats is not None:
            cache["stats"] = stats[k]
        out[i] = cache
    return out


def _read_upstream(path: Path) -> tuple[str, dict[str, tuple[int, np.ndarray]]]:
    """(key, slice id -> (frames, embedding)) of a segment folder's ``embeddings.npz``;
    ('', {}) when there is none or it cannot be read."""
    if not path.exists():
        return "", {}
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, frames, emb = z["ids"], z["frames"], z["emb"]
            if emb.shape != (len(ids), 256) or frames.shape != (len(ids),):
                raise ValueError(f"embeddings of shape {emb.shape} for {len(ids)} ids")
            return str(z["key"]), {
                str(i): (int(n), e) for i, n, e in zip(ids, frames, emb, strict=True)
            }
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s: unreadable segment embeddings, embedding its slices here (%s)", path, exc)
        return "", {}


def dominant_profile(emb: np.ndarray, cut: float = CLUSTER_CUT) -> tuple[Profile, str]:
    """The largest cluster of ``emb`` (average linkage, cosine distance cut at ``cut``) as a
    profile, and a note saying its share."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(emb) == 0:
        raise ValueError("dominant: no slice with speech to cluster")
    labels = (
        np.ones(len(emb), dtype=int)
        if len(emb) == 1
        else fcluster(
            linkage(emb.astype(np.float64), "average", metric="cosine"), t=cut, criterion="distance"
        )
    )
    values, counts = np.unique(labels, return_counts=True)
    top = values[np.argmax(counts)]
    members = emb[labels == top]
    note = (
        f"dominant voice: largest of {len(values)} clusters, {len(members)} of {len(emb)} "
        f"slices ({len(members) / len(emb):.0%})"
    )
    empty = np.zeros((0, emb.shape[1]), dtype=emb.dtype)
    return Profile("dominant", members, empty, np.zeros(0, dtype=np.int64)), note


def plot_scores(
    scores: np.ndarray, kept_ids: np.ndarray, ids: np.ndarray, thr: Threshold, path: Path
) -> None:
    """Histogram of the slices' values of the threshold's column, kept vs rejected, with the
    threshold (PNG)."""
    from malmoi.plots import pyplot

    plt = pyplot()
    keep = np.isin(ids, kept_ids)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.histogram_bin_edges(scores, bins=40) if len(scores) else 10
    ax.hist(scores[keep], bins=bins, color="tab:green", alpha=0.7, label=f"kept ({keep.sum()})")
    ax.hist(
        scores[~keep], bins=bins, color="tab:red", alpha=0.7, label=f"rejected ({(~keep).sum()})"
    )
    ax.axvline(thr.value, color="k", ls="--", label=f"threshold {thr.value:.2f} ({thr.rule})")
    ax.set_xlabel(
        {
            "score": "score (AS-norm against the cohort)",
            "self_similarity": "self_similarity (cosine to the run's own enrollment)",
        }[thr.column]
        if thr.rule != "reference-loo"
        else "similarity (cosine)"
    )
    ax.set_ylabel("slices")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` without the partition's working keys."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _speech(cache: dict[str, Any], row: dict[str, Any]) -> float:
    """Seconds of speech of a slice (its cache's; a cache of version 1: its duration)."""
    return float(cache["speech"]) if "speech" in cache else float(row.get("duration") or 0.0)
