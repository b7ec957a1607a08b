"""Speaker filter stage: keep the slices of one target voice.

Reads: the previous stage's slices (the segment stage's in the pipeline; any audio files from
the CLI). Each slice is embedded once (Resemblyzer d-vector), its embedding cached in
``<out>/embeddings/<id>.npz`` (with the input's fingerprint), and the audio linked (hard link,
else copied) to ``<out>/<parent id>/<id>.<ext>``. A slice the segment stage already embedded
(``gender_engine: embedding``) is not embedded again: its embedding is taken from the segment
folder's ``embeddings.npz`` when that file was written by the same segment work (its key is the
slice row's key, the item's fingerprint). Every row carries ``similarity`` (cosine to the
profile's enrollment), ``score`` (AS-norm against the cohort) and ``threshold``; kept and
rejected slices are both listed, the rejected with the reason.

The threshold is not part of the items' keys: after the loop, :meth:`after_run` scores every
slice from the cached embeddings, picks the threshold (a pluggable rule, see
:mod:`speaker_filter.score`) and re-partitions ``manifest.csv`` / ``rejected.csv`` /
``progress.csv``; it writes ``threshold.json`` (value, rule, reason, settings) and
``scores.png`` (histogram, kept vs rejected, with the threshold). So a threshold change moves rows
without computing any embedding; a new profile recomputes the scores (the items' keys hold its
digest) but still reads the embeddings from the cache. With ``dominant`` the slices of the run
are clustered and the largest cluster's embeddings become the profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf
from pydantic import Field

from malmoi.config import SpeakerFilterConfig, resolve_profiles_dir
from malmoi.errors import ItemError
from malmoi.files import atomic_path, atomic_write_text
from malmoi.logs import get_logger
from malmoi.manifest import (
    AudioRow,
    Table,
    rejected_model,
)
from malmoi.stage import Item, PassesSlicesOn, Result, Stage, StageReport
from speaker_filter.cohort import Cohort, bundled_cohort
from speaker_filter.profile import (
    Profile,
    build_profile,
    load_profile,
    profile_meta_digest,
    references_digest,
)
from speaker_filter.score import (
    RULES,
    RunScores,
    Threshold,
    ThresholdRule,
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
        None, description="the run's threshold (on self_similarity with auto, else on score)"
    )


class SpeakerFilterStage(PassesSlicesOn, Stage[SpeakerFilterConfig, SpeakerRow]):
    """Embed each slice (cached), score it against the target profile, keep the target's."""

    name: ClassVar[str] = "speaker_filter"
    version: ClassVar[str] = "1"
    row_type: ClassVar[type[SpeakerRow]] = SpeakerRow
    settings_file: ClassVar[str] = "threshold.json"
    # the profile enters the key by its digest (clip hashes), the threshold not at all
    unkeyed_params: ClassVar[frozenset[str]] = frozenset(
        {"references", "profile", "profiles_dir", "threshold"}
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
        """Embed (and cache) the items without a valid cached embedding, ``BATCH`` slices per
        call; an unreadable file is left for :meth:`process` to report."""
        todo = [i for i in items if self._cached_for(i) is None]
        for a in range(0, len(todo), BATCH):
            wavs, ok = [], []
            for item in todo[a : a + BATCH]:
                try:
                    wav, sr = sf.read(str(item.path), dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError, OSError):
                    continue
                wavs.append(self._embedder().preprocess(wav.mean(axis=1), sr))
                ok.append(item)
            if not ok:
                continue
            emb = self._embedder().embed_preprocessed(wavs)
            self.embedded += len(ok)
            for item, e in zip(ok, emb, strict=True):
                self._store(item, e)
            log.info(
                "speaker_filter: embedded %d of %d slices", min(a + BATCH, len(todo)), len(todo)
            )

    # --- per slice ----------------------------------------------------------------------------

    def embedding(self, item: Item) -> np.ndarray:
        """The slice's embedding: from the cache when made from the same input, else computed
        (and cached). NaN when the slice holds too little speech."""
        cached = self._cached_for(item)
        if cached is not None:
            return cached
        try:
            wav, sr = sf.read(str(item.path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise ItemError(f"{item.shown}: cannot read the audio ({exc})") from None
        emb = self._embedder().embed([wav.mean(axis=1)], sr)[0]
        self.embedded += 1
        self._store(item, emb)
        return emb

    def _cached_for(self, item: Item) -> np.ndarray | None:
        """The cached embedding of ``item`` when made from the same input, else the upstream
        one (cached now), else None."""
        cache = self.out_dir / "embeddings" / f"{item.id}.npz"
        if cache.exists():
            try:
                z = np.load(cache, allow_pickle=False)
                if str(z["fingerprint"]) == item.fingerprint:
                    return z["emb"]
            except (OSError, ValueError, KeyError):
                log.warning("%s: unreadable embedding cache, computing again", item.id)
        emb = self._upstream(item)
        if emb is not None:
            self._store(item, emb)
        return emb

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

    def _store(self, item: Item, emb: np.ndarray) -> None:
        cache = self.out_dir / "embeddings" / f"{item.id}.npz"
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, tmp.open("wb") as fh:
            np.savez(fh, emb=emb, fingerprint=np.array(item.fingerprint))

    def process(self, item: Item) -> Result[SpeakerRow]:
        emb = self.embedding(item)
        info = sf.info(str(item.path))
        rel = self.link_input(item)
        sim = sc = None
        if not np.isnan(emb).any() and self._profile() is not None:
            s1, s2 = score(self._profile().enroll, emb[None, :], self._cohort())  # type: ignore[union-attr]
            sim, sc = round(float(s1[0]), 4), round(float(s2[0]), 4)
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
        return Result(rejected=[(row, NO_SPEECH if np.isnan(emb).any() else WAITING)])

    # --- after the loop: threshold and partition ----------------------------------------------

    def after_run(self, report: StageReport) -> None:
        self._upstreams = {}  # the segment folders' embeddings, read again by the next run
        kept_t = Table(self.out_dir, SpeakerRow)
        rej_t = Table(self.out_dir, rejected_model(SpeakerRow))
        records = [dict(r.record()) for r in kept_t.rows()] + [
            dict(r.record())
            for r in rej_t.rows()  # type: ignore[attr-defined]
        ]
        if not records:
            return
        ids = [r["id"] for r in records]
        emb = np.stack([self._cached(i) for i in ids])
        ok = ~np.isnan(emb).any(axis=1)
        note = ""
        if self.params.dominant and not (self.params.references or self.params.profile):
            profile, note = dominant_profile(emb[ok])
        else:
            profile = self._profile()
            assert profile is not None
        cohort = self._cohort()
        sim = np.full(len(ids), np.nan)
        scores = np.full(len(ids), np.nan)
        if ok.any():
            sim[ok], scores[ok] = score(profile.enroll, emb[ok], cohort)
        run = RunScores(emb[ok], sim[ok], scores[ok])
        thr = pick_threshold(self.params.threshold, profile, cohort, run, self.rules)
        keep = np.zeros(len(ids), dtype=bool)
        decided = np.full(len(ids), np.nan)
        selfsim = np.full(len(ids), np.nan)
        if ok.any():
            keep[ok] = thr.keep(run)
            decided[ok] = run.score if thr.values is None else thr.values
            if thr.values is not None:
                selfsim[ok] = thr.values
        kept, rejected = [], []
        for i, rec in enumerate(records):
            rec.pop("reason", None)
            rec.update(threshold=round(thr.value, 4))
            if not ok[i]:
                rec.update(similarity=None, score=None, self_similarity=None)
                rejected.append({**rec, "reason": NO_SPEECH})
                continue
            rec.update(
                similarity=round(float(sim[i]), 4),
                score=round(float(scores[i]), 4),
                self_similarity=None if np.isnan(selfsim[i]) else round(float(selfsim[i]), 4),
            )
            if keep[i]:
                kept.append(rec)
            else:
                setting = self.params.threshold
                why = (
                    f"{thr.column} {decided[i]:.3f} below threshold {thr.value:.3f} "
                    f"({setting}: {thr.rule})"
                )
                rejected.append({**rec, "reason": why})
        self.repartition_linked(kept, rejected, report)
        report.rejected_by_reason = {}
        for r in rejected:
            key = NO_SPEECH if r["reason"] == NO_SPEECH else f"{thr.column} below threshold"
            report.rejected_by_reason[key] = report.rejected_by_reason.get(key, 0) + 1
        info = {
            "value": thr.value,
            "column": thr.column,
            "rule": thr.rule,
            "reason": thr.reason,
            "setting": self.params.threshold,
            "settings": self.settings(),
            "kept": len(kept),
            "rejected": len(rejected),
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
            decided[ok],
            np.array([r["id"] for r in kept]),
            np.array(ids)[ok],
            thr,
            self.out_dir / "scores.png",
        )

    def _cached(self, slice_id: str) -> np.ndarray:
        path = self.out_dir / "embeddings" / f"{slice_id}.npz"
        if not path.exists():
            return np.full(256, np.nan, dtype=np.float32)
        return np.load(path, allow_pickle=False)["emb"]

    def settings(self) -> dict[str, Any]:
        """What the partition depends on beyond the items' keys."""
        return {
            "threshold": self.params.threshold,
            "digest": self.digest,
            "cohort": self.params.cohort,
            "dominant": self.params.dominant,
            "version": self.version,
        }


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
