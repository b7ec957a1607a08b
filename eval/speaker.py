"""Research bench for issue 11: how reliably does a Resemblyzer speaker filter keep the target's
slices, clean and under music residue, with thresholds chosen without looking at test labels?

Cases (built from ../shared/data):
- clean: the 6 x 10 LibriSpeech utterances; each speaker in turn is the target, its first 3
  utterances are the references, the other 57 full utterances are filtered (7 target, 50 not);
- hard: consecutive 2-s crops (at most ``MAX_CROPS`` per utterance) of those 57 utterances with
  music added at 10 dB SNR (MUSAN music, musanmix.wav 0.0-22.48 s, random offsets); clean refs.
- cohort: the 120 LibriSpeech speakers of data/librispeech/speakers (disjoint from the 6 test
  speakers, checked), one utterance each: the full utterance, 3 clean 2-s crops and the same 3
  crops with music at 10 dB SNR from a DIFFERENT piece (data/music/audio_example.mp3). The same
  other piece makes the matched-condition enrollment crops, so nothing of the test music is
  used to build references, cohort or thresholds.

Methods (score; automatic threshold):
- a plain: cosine to the mean of the 3 clean reference embeddings; threshold = the lowest
  leave-one-out score of the references (each ref against the mean of the other two);
- b snorm: adaptive symmetric score normalisation (AS-norm) against the cohort, top-K;
  threshold = the highest normalised score any cohort item reaches against the target (each
  cohort speaker normalised with a cohort that leaves that speaker out) — an impostor bound;
- c matched: cosine to the mean of the clean refs plus their 2-s music crops; threshold = the
  lowest leave-one-reference-out score of a ref or its crops;
- d snorm+matched: b's normalisation and threshold rule on c's enrollment;
- e d+context: d's normalised score averaged with the adjacent crops of the same source
  (hard case only; in the clean case each clip is alone); same threshold as d.

Methods h-q (two-sided, per-condition and fixed-negative-mixture thresholds, gated context) and
the hard-turns case: see RESEARCH.md, round 2, and the functions below.

Run: ``python -m eval.speaker`` (embeddings are cached in .cache/)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.common import SR, load, markdown_table, mix
from malmoi.logs import get_logger
from speaker_filter.cohort import Cohort, unit
from speaker_filter.profile import Profile
from speaker_filter.score import RunScores, asnorm, self_enrollment_rule

log = get_logger(__name__)

CROP_S = 2.0
MAX_CROPS = 5
COHORT_CROPS = 3
SNR_DB = 10.0
N_REFS = 3
TOP_K = 100
TEST_MUSIC = ("ina/musanmix.wav", 0.0, 22.48)
OTHER_MUSIC = "music/audio_example.mp3"
TEST_SPEAKERS = ("1688", "1998", "2609", "3005", "3331", "367")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO.parent / "shared" / "data"


# --------------------------------------------------------------------------- audio


def consecutive_crops(wav: np.ndarray, n_max: int) -> list[np.ndarray]:
    """Adjacent, non-overlapping 2-s crops from the start (at most ``n_max``)."""
    n = round(CROP_S * SR)
    k = min(n_max, len(wav) // n)
    return [wav[i * n : (i + 1) * n] for i in range(k)]


def spread_crops(wav: np.ndarray, k: int) -> list[np.ndarray]:
    """``k`` 2-s crops spread evenly over ``wav`` (first at 0, last ending at the end)."""
    n = round(CROP_S * SR)
    if len(wav) < n:
        return []
    starts = sorted({round(i * (len(wav) - n) / max(1, k - 1)) for i in range(k)})
    return [wav[s : s + n] for s in starts]


def noise_floor_db(wav: np.ndarray, frame_s: float = 0.025) -> float:
    """A cheap residue estimate: the 10th- over the 90th-percentile frame RMS of ``wav``, in dB.
    Clean speech has near-silent frames between words (about -40 dB or lower); speech over a
    music bed at 10 dB SNR has none (about -15 dB)."""
    n = round(frame_s * SR)
    k = len(wav) // n
    if k < 4:
        return 0.0
    rms = np.sqrt(np.mean(wav[: k * n].astype(np.float64).reshape(k, n) ** 2, axis=1)) + 1e-9
    return float(20 * np.log10(np.percentile(rms, 10) / np.percentile(rms, 90)))


FLOOR_MUSIC_DB = -25.0  # midway between the two regimes above; fixed a priori


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """All embeddings of the bench, with one label array per set."""

    utt_spk: np.ndarray  # (60,) speaker of each test utterance
    utt_idx: np.ndarray  # (60,) index of the utterance within its speaker (0..9)
    utt_emb: np.ndarray  # (60, 256) clean full utterances
    crop_utt: np.ndarray  # (m,) which utterance (row of utt_*) each hard crop comes from
    crop_pos: np.ndarray  # (m,) position of the crop in its utterance
    crop_emb: np.ndarray  # (m, 256) 2-s crops + test music
    enr_utt: np.ndarray  # (r,) utterance of each enrollment crop
    enr_emb: np.ndarray  # (r, 256) 2-s crops + other music (matched enrollment)
    coh_spk: np.ndarray  # (c,) cohort speaker of each cohort item
    coh_kind: np.ndarray  # (c,) "full", "crop" or "crop+music"
    coh_emb: np.ndarray  # (c, 256)
    utt_floor: np.ndarray  # (60,) noise_floor_db of each clean utterance
    crop_floor: np.ndarray  # (m,) noise_floor_db of each hard crop
    timings: dict = field(default_factory=dict)


def build(shared: Path, cache: Path | None, threads: int = 1) -> Data:
    """Embed every clip of the bench (or read them from ``cache`` if made from the same inputs)."""
    utt_files = sorted((shared / "librispeech" / "utterances").glob("*/*.flac"))
    coh_files = sorted((shared / "librispeech" / "speakers").glob("*.flac"))
    utt_spk = np.array([f.name.split("-")[0] for f in utt_files])
    coh_ids = {f.name.split("-")[0] for f in coh_files}
    if coh_ids & set(utt_spk):
        raise ValueError(f"cohort and test speakers overlap: {sorted(coh_ids & set(utt_spk))}")
    if len(coh_ids) != len(coh_files):
        raise ValueError("cohort has more than one utterance per speaker")
    key = hashlib.sha256(
        json.dumps(
            [[f.name for f in utt_files + coh_files], CROP_S, MAX_CROPS, COHORT_CROPS, SNR_DB, 2]
        ).encode()
    ).hexdigest()[:16]
    if cache is not None and cache.exists():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            log.info("embeddings from %s", cache)
            arrays = {k: z[k] for k in z.files if k not in ("key", "timings")}
            return Data(**arrays, timings=json.loads(str(z["timings"])))

    from malmoi.embedding import Embedder

    rng = np.random.default_rng(11)
    test_music = load(shared / TEST_MUSIC[0])[round(TEST_MUSIC[1] * SR) : round(TEST_MUSIC[2] * SR)]
    other_music = load(shared / OTHER_MUSIC)
    utts = [load(f) for f in utt_files]
    utt_idx = np.array([int(f.stem.split("-")[-1]) for f in utt_files])
    crops, crop_utt, crop_pos, enr, enr_utt = [], [], [], [], []
    for i, w in enumerate(utts):
        for p, c in enumerate(consecutive_crops(w, MAX_CROPS)):
            crops.append(mix(c, test_music, SNR_DB, rng))
            crop_utt.append(i)
            crop_pos.append(p)
            enr.append(mix(c, other_music, SNR_DB, rng))
            enr_utt.append(i)
    coh, coh_spk, coh_kind = [], [], []
    for f in coh_files:
        w = load(f)
        spk = f.name.split("-")[0]
        coh.append(w)
        coh_spk.append(spk)
        coh_kind.append("full")
        for c in spread_crops(w, COHORT_CROPS):
            coh += [c, mix(c, other_music, SNR_DB, rng)]
            coh_spk += [spk, spk]
            coh_kind += ["crop", "crop+music"]

    emb = Embedder(threads=threads)
    timings = {}

    def run(name: str, wavs: list[np.ndarray]) -> np.ndarray:
        t = time.perf_counter()
        e = emb.embed(wavs, SR)
        dt = time.perf_counter() - t
        timings[name] = (len(wavs), sum(len(w) for w in wavs) / SR, dt)
        log.info("%s: %d clips in %.1f s", name, len(wavs), dt)
        return e

    data = Data(
        utt_spk=utt_spk,
        utt_idx=utt_idx,
        utt_emb=run("full utterances", utts),
        crop_utt=np.array(crop_utt),
        crop_pos=np.array(crop_pos),
        crop_emb=run("2-s crops + music", crops),
        enr_utt=np.array(enr_utt),
        enr_emb=run("2-s enrollment crops", enr),
        coh_spk=np.array(coh_spk),
        coh_kind=np.array(coh_kind),
        coh_emb=run("cohort", coh),
        utt_floor=np.array([noise_floor_db(w) for w in utts]),
        crop_floor=np.array([noise_floor_db(w) for w in crops]),
        timings=timings,
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for k, v in vars(data).items() if k != "timings"}
        np.savez(cache, key=key, timings=np.array(json.dumps(timings)), **arrays)
    return data


# --------------------------------------------------------------------------- scoring


def cohort_bound(enroll: np.ndarray, cohort: np.ndarray, spk: np.ndarray, k: int = TOP_K):
    """Normalised scores of every cohort item against ``enroll``, each normalised with a cohort
    that leaves its own speaker out: the impostor scores the threshold must stay above."""
    out = np.empty(len(cohort))
    for s in np.unique(spk):
        own = spk == s
        out[own] = asnorm(enroll, cohort[own], cohort[~own], k)
    return out


def prf(keep: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(precision, recall); precision is 1.0 when nothing is kept (no false keep)."""
    tp = int(np.sum(keep & truth))
    kept = int(np.sum(keep))
    return (tp / kept if kept else 1.0), tp / max(1, int(np.sum(truth)))


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    pos, neg = scores[truth], scores[~truth]
    return float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg))


def context_average(scores: np.ndarray, group: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Each score averaged with the scores of the adjacent crops (pos +- 1) of the same group."""
    out = np.empty_like(scores)
    lookup = {(g, p): i for i, (g, p) in enumerate(zip(group.tolist(), pos.tolist(), strict=True))}
    for i, (g, p) in enumerate(zip(group.tolist(), pos.tolist(), strict=True)):
        idx = [lookup[(g, q)] for q in (p - 1, p, p + 1) if (g, q) in lookup]
        out[i] = scores[idx].mean()
    return out


def mixture_threshold(scores: np.ndarray, fallback: float, min_separation: float = 2.0) -> float:
    """Threshold from the slices' own score distribution: a 2-component Gaussian mixture on the
    scores, cut where the upper component becomes the more probable one. Falls back to
    ``fallback`` when the components are not apart by ``min_separation`` pooled standard
    deviations (one voice only, or no structure to trust)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    if len(x) < 10:
        return fallback
    gm = GaussianMixture(2, random_state=0, n_init=3).fit(x)
    mu = gm.means_.ravel()
    sd = np.sqrt(gm.covariances_.ravel())
    lo, hi = int(np.argmin(mu)), int(np.argmax(mu))
    if (mu[hi] - mu[lo]) / np.sqrt(0.5 * (sd[lo] ** 2 + sd[hi] ** 2)) < min_separation:
        return fallback
    grid = np.linspace(mu[lo], mu[hi], 512).reshape(-1, 1)
    post = gm.predict_proba(grid)[:, hi]
    return float(grid[np.argmax(post >= 0.5), 0])


# --------------------------------------------------------------------------- two-sided rules

SD_FLOOR = 0.5  # normalised-score units; a Gaussian fitted to 3 LOO scores needs a floor
KNN_CONDITION = 10
# how a slice's condition (clean / music residue) is judged: "floor" (noise_floor_db of its
# audio), "knn" (its nearest cohort items' kind, embeddings only) or "case" (as built)
CONDITION = os.environ.get("SPEAKER_EVAL_CONDITION", "case")


def positions(group: np.ndarray) -> np.ndarray:
    """Running index of each item within its ``group`` (in array order)."""
    seen: dict = {}
    out = np.empty(len(group), dtype=int)
    for i, g in enumerate(group.tolist()):
        out[i] = seen.get(g, 0)
        seen[g] = out[i] + 1
    return out


def music_condition(x: np.ndarray, cohort: np.ndarray, coh_music: np.ndarray) -> np.ndarray:
    """True for the rows of ``x`` whose ``KNN_CONDITION`` nearest cohort items (cosine) are
    mostly music crops: the slice resembles the cohort's music condition more than its clean
    one. Reads embeddings only, no label of ``x``."""
    s = unit(x) @ unit(cohort).T
    idx = np.argsort(-s, axis=1)[:, :KNN_CONDITION]
    return coh_music[idx].mean(axis=1) > 0.5


def gaussian(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (floored at ``SD_FLOOR``) of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), max(float(x.std()), SD_FLOOR)


def log_normal_pdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)


def gaussian_crossing(neg: np.ndarray, pos: np.ndarray, prior_pos: float = 0.5) -> float:
    """Score between the means where Gaussians fitted to ``neg`` and ``pos`` (weighted by the
    priors) are equally likely; the midpoint of the means if they do not cross between them."""
    mn, sn = gaussian(neg)
    mp, sp = gaussian(pos)
    if mp <= mn:
        return 0.5 * (mn + mp)
    grid = np.linspace(mn, mp, 2048)
    d = (np.log(prior_pos) + log_normal_pdf(grid, mp, sp)) - (
        np.log(1 - prior_pos) + log_normal_pdf(grid, mn, sn)
    )
    above = np.flatnonzero(d >= 0)
    return float(grid[above[0]]) if len(above) else 0.5 * (mn + mp)


def fixed_negative_mixture(
    scores: np.ndarray, neg: np.ndarray, pos_init: np.ndarray, iters: int = 200
) -> tuple[float, float] | None:
    """EM for a 2-Gaussian mixture on ``scores`` whose negative component is FIXED to a Gaussian
    fitted to ``neg`` (cohort impostors); only the positive component (started from
    ``pos_init``) and the weight are fitted. Returns (threshold at posterior 0.5, weight), or
    None when the fit has no positive component above the negative one."""
    x = np.asarray(scores, dtype=np.float64)
    mn, sn = gaussian(neg)
    mp, sp = gaussian(pos_init)
    w = 0.2
    if len(x) < 5:
        return None
    for _ in range(iters):
        lp = np.log(w) + log_normal_pdf(x, mp, sp)
        ln = np.log(1 - w) + log_normal_pdf(x, mn, sn)
        r = 1.0 / (1.0 + np.exp(np.clip(ln - lp, -50, 50)))
        if r.sum() < 1e-6:
            return None
        w = float(np.clip(r.mean(), 1e-4, 1 - 1e-4))
        mp = float((r * x).sum() / r.sum())
        sp = max(float(np.sqrt((r * (x - mp) ** 2).sum() / r.sum())), SD_FLOOR)
    if mp <= mn:
        return None
    grid = np.linspace(mn, mp, 2048)
    d = (np.log(w) + log_normal_pdf(grid, mp, sp)) - (np.log(1 - w) + log_normal_pdf(grid, mn, sn))
    above = np.flatnonzero(d >= 0)
    return (float(grid[above[0]]) if len(above) else 0.5 * (mn + mp)), w


def kde_logpdf(x: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Log density at ``x`` of a Gaussian kernel estimate on ``sample`` (Silverman bandwidth):
    the cohort impostors' empirical score distribution, tails included."""
    sample = np.asarray(sample, dtype=np.float64)
    h = 1.06 * sample.std() * len(sample) ** -0.2
    z = (np.asarray(x, dtype=np.float64)[:, None] - sample[None, :]) / h
    m = (-0.5 * z**2).max(axis=1)
    return m + np.log(np.exp(-0.5 * z**2 - m[:, None]).mean(axis=1)) - np.log(h)


def kde_negative_mixture(
    scores: np.ndarray, neg: np.ndarray, pos_init: np.ndarray, iters: int = 200
) -> tuple[float, float] | None:
    """As ``fixed_negative_mixture`` but the fixed negative component is the kernel density of
    the cohort impostor scores ``neg`` itself (no Gaussian shape assumed). Threshold: the lowest
    score from which the posterior of the target stays >= 0.5 up to the positive mean."""
    x = np.asarray(scores, dtype=np.float64)
    if len(x) < 5:
        return None
    ln_x = kde_logpdf(x, neg)
    mp, sp = gaussian(pos_init)
    w = 0.2
    for _ in range(iters):
        lp = np.log(w) + log_normal_pdf(x, mp, sp)
        ln = np.log(1 - w) + ln_x
        r = 1.0 / (1.0 + np.exp(np.clip(ln - lp, -50, 50)))
        if r.sum() < 1e-6:
            return None
        w = float(np.clip(r.mean(), 1e-4, 1 - 1e-4))
        mp = float((r * x).sum() / r.sum())
        sp = max(float(np.sqrt((r * (x - mp) ** 2).sum() / r.sum())), SD_FLOOR)
    mn = float(np.mean(neg))
    if mp <= mn:
        return None
    grid = np.linspace(mn, mp, 2048)
    d = (np.log(w) + log_normal_pdf(grid, mp, sp)) - (np.log(1 - w) + kde_logpdf(grid, neg))
    below = np.flatnonzero(d < 0)
    if len(below) == 0:
        return float(grid[0]), w
    if below[-1] == len(grid) - 1:
        return None
    return float(grid[below[-1] + 1]), w


def gated_context(
    scores: np.ndarray, group: np.ndarray, pos: np.ndarray, lower: float | np.ndarray
) -> np.ndarray:
    """Turn-taking-robust context: a slice's score averaged with those of its adjacent slices
    (pos +- 1, same group) that are themselves at or above ``lower``; a slice below ``lower``
    keeps its own score (a neighbour can not lift an impostor that is clearly out)."""
    out = scores.astype(np.float64).copy()
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), scores.shape)
    lookup = {(g, p): i for i, (g, p) in enumerate(zip(group.tolist(), pos.tolist(), strict=True))}
    for i, (g, p) in enumerate(zip(group.tolist(), pos.tolist(), strict=True)):
        if scores[i] < lower[i]:
            continue
        idx = [i] + [
            lookup[(g, q)]
            for q in (p - 1, p + 1)
            if (g, q) in lookup and scores[lookup[(g, q)]] >= lower[lookup[(g, q)]]
        ]
        out[i] = scores[idx].mean()
    return out


METHODS = (
    "a plain",
    "b snorm",
    "c matched",
    "d snorm+matched",
    "e d+context",
    "f d, mixture thr",
    "g e, mixture thr",
    "h d, per-condition bound",
    "i d, cond. midpoint",
    "j d, cond. Gauss crossing",
    "k d, cond. fixed-neg mixture",
    "l e, cond. Gauss crossing (ctx-matched)",
    "m gated ctx, cond. Gauss crossing",
    "n gated ctx, cond. fixed-neg mixture",
    "o d, cond. KDE-neg mixture",
    "p gated ctx, cond. KDE-neg mixture",
    "q gated ctx; clean: j, music: p",
    "r self-enrollment (the stage's auto)",
)
CONTEXT_METHODS = (
    "e d+context",
    "g e, mixture thr",
    "l e, cond. Gauss crossing (ctx-matched)",
    "m gated ctx, cond. Gauss crossing",
    "n gated ctx, cond. fixed-neg mixture",
    "o d, cond. KDE-neg mixture",
    "p gated ctx, cond. KDE-neg mixture",
    "q gated ctx; clean: j, music: p",
)


def turn_order(utts: np.ndarray, crop_utt: np.ndarray, crop_pos: np.ndarray, seed: int):
    """(group, pos) for crops laid out as ONE source in which the utterances follow each other
    in a random order: adjacent crops at an utterance boundary are usually different speakers
    (a turn-taking proxy for the context methods)."""
    order = np.random.default_rng(seed).permutation(np.unique(utts))
    rank = {u: i for i, u in enumerate(order.tolist())}
    key = np.array(
        [rank[u] * 100 + p for u, p in zip(crop_utt.tolist(), crop_pos.tolist(), strict=True)]
    )
    pos = np.empty(len(key), dtype=int)
    pos[np.argsort(key, kind="stable")] = np.arange(len(key))
    return np.zeros(len(key), dtype=int), pos


def evaluate(data: Data, k: int = TOP_K) -> list[dict]:
    """One row per (method, case, target): precision, recall, threshold, AUC. Cases: clean,
    hard, and hard-turns (the hard crops, context taken across utterance boundaries)."""
    rows = []
    ok = ~np.isnan(data.coh_emb).any(axis=1)  # crops that Resemblyzer's VAD found silent
    cohort, coh_spk, coh_kind = data.coh_emb[ok], data.coh_spk[ok], data.coh_kind[ok]
    coh_music = coh_kind == "crop+music"
    enr_pos = positions(data.enr_utt)
    for ti, target in enumerate(TEST_SPEAKERS):
        is_t = data.utt_spk == target
        ref_rows = np.flatnonzero(is_t & (data.utt_idx < N_REFS))
        test_utts = np.setdiff1d(np.arange(len(data.utt_spk)), ref_rows)
        refs = data.utt_emb[ref_rows]
        ref_crops = [data.enr_emb[data.enr_utt == r] for r in ref_rows]
        ref_crop_pos = [enr_pos[data.enr_utt == r] for r in ref_rows]

        plain = unit(refs.mean(axis=0))
        matched = unit(np.concatenate([unit(refs), *ref_crops]).mean(axis=0))

        # leave-one-reference-out scores (the "target side" of the thresholds)
        loo_plain, loo_matched = [], []
        loo_full_n, loo_crop_n, loo_crop_grp, loo_crop_pos = [], [], [], []
        for j in range(len(ref_rows)):
            others = [i for i in range(len(ref_rows)) if i != j]
            e_p = unit(refs[others].mean(axis=0))
            loo_plain.append(float(unit(refs[j]) @ e_p))
            e_m = unit(
                np.concatenate([unit(refs[others]), *[ref_crops[i] for i in others]]).mean(0)
            )
            loo_matched += list(unit(np.vstack([refs[j], ref_crops[j]])) @ e_m)
            loo_full_n += list(asnorm(e_m, refs[j : j + 1], cohort, k))
            loo_crop_n += list(asnorm(e_m, ref_crops[j], cohort, k))
            loo_crop_grp += [j] * len(ref_crops[j])
            loo_crop_pos += list(ref_crop_pos[j])
        loo_full_n, loo_crop_n = np.array(loo_full_n), np.array(loo_crop_n)
        loo_crop_ctx = context_average(loo_crop_n, np.array(loo_crop_grp), np.array(loo_crop_pos))

        cb_matched = cohort_bound(matched, cohort, coh_spk, k)
        thr = {
            "a plain": min(loo_plain),
            "c matched": min(loo_matched),
            "b snorm": float(cohort_bound(plain, cohort, coh_spk, k).max()),
            "d snorm+matched": float(cb_matched.max()),
        }
        thr["e d+context"] = thr["d snorm+matched"]
        # per condition (False = clean, True = music): impostor and target score samples
        neg = {False: cb_matched[~coh_music], True: cb_matched[coh_music]}
        pos = {False: loo_full_n, True: loo_crop_n}
        neg_ctx = {
            False: neg[False],
            True: context_average(neg[True], coh_spk[coh_music], positions(coh_spk[coh_music])),
        }
        pos_ctx = {False: loo_full_n, True: loo_crop_ctx}
        cond_thr = {
            "h d, per-condition bound": {c: float(neg[c].max()) for c in (False, True)},
            "i d, cond. midpoint": {
                c: 0.5 * (float(neg[c].max()) + float(pos[c].min())) for c in (False, True)
            },
            "j d, cond. Gauss crossing": {
                c: gaussian_crossing(neg[c], pos[c]) for c in (False, True)
            },
            "l e, cond. Gauss crossing (ctx-matched)": {
                c: gaussian_crossing(neg_ctx[c], pos_ctx[c]) for c in (False, True)
            },
        }
        cond_thr["m gated ctx, cond. Gauss crossing"] = cond_thr["j d, cond. Gauss crossing"]

        crop_sel = np.isin(data.crop_utt, test_utts)
        crop_truth = data.utt_spk[data.crop_utt[crop_sel]] == target
        floors = {
            "clean": data.utt_floor[test_utts],
            "hard": data.crop_floor[crop_sel],
            "hard-turns": data.crop_floor[crop_sel],
        }
        cases = {
            "clean": (data.utt_emb[test_utts], data.utt_spk[test_utts] == target, None),
            "hard": (
                data.crop_emb[crop_sel],
                crop_truth,
                (data.crop_utt[crop_sel], data.crop_pos[crop_sel]),
            ),
            "hard-turns": (
                data.crop_emb[crop_sel],
                crop_truth,
                turn_order(test_utts, data.crop_utt[crop_sel], data.crop_pos[crop_sel], ti),
            ),
        }
        for case, (x, truth, ctx) in cases.items():
            if CONDITION == "knn":
                cond = music_condition(x, cohort, coh_music)
            elif CONDITION == "floor":
                cond = floors[case] > FLOOR_MUSIC_DB
            else:  # "case": the condition the case was built with
                cond = np.full(len(x), case != "clean")
            d = asnorm(matched, x, cohort, k)
            scores = {
                "a plain": unit(x) @ plain,
                "b snorm": asnorm(plain, x, cohort, k),
                "c matched": unit(x) @ matched,
                "d snorm+matched": d,
            }
            scores["e d+context"] = context_average(d, *ctx) if ctx is not None else d
            scores["f d, mixture thr"] = d
            scores["g e, mixture thr"] = scores["e d+context"]
            for m in cond_thr:
                scores[m] = d
            scores["l e, cond. Gauss crossing (ctx-matched)"] = scores["e d+context"]
            # gate: a neighbour counts only if it is above the impostor side's mean + 2 sd of
            # its condition (plausibly the target), and only lifts slices that are too
            lower = np.array([gaussian(neg[c])[0] + 2 * gaussian(neg[c])[1] for c in cond])
            gated = d.copy()
            if ctx is not None:
                gated = gated_context(d, *ctx, lower=lower)
            scores["m gated ctx, cond. Gauss crossing"] = gated
            scores["n gated ctx, cond. fixed-neg mixture"] = gated
            t_slice = {m: np.full(len(d), thr[m]) for m in thr}
            t_slice["f d, mixture thr"] = np.full(
                len(d), mixture_threshold(d, thr["d snorm+matched"])
            )
            t_slice["g e, mixture thr"] = np.full(
                len(d), mixture_threshold(scores["e d+context"], thr["d snorm+matched"])
            )
            for m, tc in cond_thr.items():
                t_slice[m] = np.where(cond, tc[True], tc[False])
            for m, sc, fitter in (
                ("k d, cond. fixed-neg mixture", d, fixed_negative_mixture),
                ("n gated ctx, cond. fixed-neg mixture", gated, fixed_negative_mixture),
                ("o d, cond. KDE-neg mixture", d, kde_negative_mixture),
                ("p gated ctx, cond. KDE-neg mixture", gated, kde_negative_mixture),
            ):
                scores[m] = sc
                t = np.empty(len(d))
                for c in (False, True):
                    sel = cond == c
                    fit = fitter(sc[sel], neg[c], pos[c])
                    t[sel] = fit[0] if fit is not None else cond_thr["j d, cond. Gauss crossing"][c]
                t_slice[m] = t
            scores["q gated ctx; clean: j, music: p"] = gated
            t_slice["q gated ctx; clean: j, music: p"] = np.where(
                cond,
                t_slice["p gated ctx, cond. KDE-neg mixture"],
                cond_thr["j d, cond. Gauss crossing"][False],
            )
            # r: the stage's own rule (speaker_filter.score), on this bench's profile and cohort
            profile = Profile(
                target,
                refs,
                np.concatenate(ref_crops),
                np.concatenate([[i] * len(c) for i, c in enumerate(ref_crops)]).astype(np.int64),
            )
            run = RunScores(x, unit(x) @ matched, d)
            thr_r = self_enrollment_rule(profile, Cohort(unit(cohort), coh_spk), run)
            scores["r self-enrollment (the stage's auto)"] = (
                d if thr_r.values is None else thr_r.values
            )
            t_slice["r self-enrollment (the stage's auto)"] = np.full(len(d), thr_r.value)
            for m in METHODS:
                if case == "hard-turns" and m not in CONTEXT_METHODS:
                    continue
                p, r = prf(scores[m] >= t_slice[m], truth)
                rows.append(
                    dict(
                        method=m,
                        case=case,
                        target=target,
                        precision=p,
                        recall=r,
                        threshold=float(np.median(t_slice[m])),
                        auc=auc(scores[m], truth),
                        n=len(truth),
                        n_target=int(truth.sum()),
                        music_frac=float(cond.mean()),
                    )
                )
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table: per method and case, mean and worst precision/recall over the targets."""
    header = ["method", "case", "precision mean", "precision worst", "recall mean"]
    header += ["recall worst", "AUC mean", "slices (target)"]
    out = []
    for case in ("clean", "hard", "hard-turns"):
        for m in METHODS:
            rs = [r for r in rows if r["method"] == m and r["case"] == case]
            if not rs:
                continue
            p = np.array([r["precision"] for r in rs])
            rc = np.array([r["recall"] for r in rs])
            a = np.array([r["auc"] for r in rs])
            out.append(
                [
                    m,
                    case,
                    *(f"{v:.3f}" for v in (p.mean(), p.min(), rc.mean(), rc.min(), a.mean())),
                    f"{rs[0]['n']} ({rs[0]['n_target']})",
                ]
            )
    return markdown_table(header, out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "speaker_filter_eval.npz")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top-k", type=int, default=TOP_K)
    ap.add_argument("--per-target", action="store_true")
    ap.add_argument(
        "--stage",
        type=Path,
        default=None,
        metavar="WORK",
        help="also run the real stage on each case (case files and runs under WORK)",
    )
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = build(args.shared, args.cache, args.threads)
    rows = evaluate(data, args.top_k)
    print(table(rows))
    for name, (n, audio_s, dt) in data.timings.items():
        print(
            f"embedder, {name}: {n} clips, {audio_s:.0f} s of audio in {dt:.1f} s "
            f"= {n / dt:.0f} clips/s"
        )
    if args.stage is not None:
        print("\nThe stage itself (its profile, the committed cohort, threshold auto):\n")
        print(stage_table(stage_evaluate(args.shared, args.stage)))
    if args.per_target:
        for r in rows:
            print(
                f"{r['method']:18s} {r['case']:5s} {r['target']:>5s} P={r['precision']:.3f} "
                f"R={r['recall']:.3f} thr={r['threshold']:.3f} AUC={r['auc']:.3f}"
            )


# --------------------------------------------------------------------------- through the stage


@dataclass
class StageCase:
    """One case of :func:`stage_evaluate`: per target, precision and recall of the stage's own
    run (its profile, the bundled cohort, its ``auto`` threshold) and the threshold it chose."""

    case: str
    target: str
    precision: float
    recall: float
    threshold: float
    rule: str
    n: int
    n_target: int


def write_case_files(shared: Path, folder: Path) -> dict[str, list[Path]]:
    """The clean and hard cases as files the stage reads: the 60 utterances as they are, and
    their consecutive 2-s crops with the test music at 10 dB (16 kHz WAV, named
    ``<utterance>_c<k>.wav``; the same construction and seed as :func:`build`)."""
    import soundfile as sf

    utt_files = sorted((shared / "librispeech" / "utterances").glob("*/*.flac"))
    crops_dir = folder / "hard"
    if not (crops_dir / ".done").exists():
        crops_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(11)
        music = load(shared / TEST_MUSIC[0])[round(TEST_MUSIC[1] * SR) : round(TEST_MUSIC[2] * SR)]
        for f in utt_files:
            for p, c in enumerate(consecutive_crops(load(f), MAX_CROPS)):
                sf.write(crops_dir / f"{f.stem}_c{p}.wav", mix(c, music, SNR_DB, rng), SR)
        (crops_dir / ".done").touch()
    return {"clean": utt_files, "hard": sorted(crops_dir.glob("*.wav"))}


def stage_evaluate(shared: Path, work: Path) -> list[StageCase]:
    """Each test speaker in turn as the target of a real :class:`SpeakerFilterStage` run per
    case: references = its utterances 0-2 (the stage builds the profile with its own music
    crops and scores against the committed cohort), inputs = every other clip of the case."""
    from ingest.local import discover
    from malmoi.config import SpeakerFilterConfig
    from malmoi.manifest import read_records
    from speaker_filter.stage import SpeakerFilterStage

    files = write_case_files(shared, work / "cases")
    utt_files = files["clean"]
    out: list[StageCase] = []
    for target in TEST_SPEAKERS:
        refs = [f for f in utt_files if f.name.split("-")[0] == target][:N_REFS]
        ref_stems = {f.stem for f in refs}
        for case, clips in files.items():
            inputs = [f for f in clips if f.stem.split("_c")[0] not in ref_stems]
            run_dir = work / "runs" / f"{case}-{target}"
            stage = SpeakerFilterStage(SpeakerFilterConfig(references=refs), run_dir)
            stage.run(list(discover(inputs, ["flac", "wav"])))
            kept = {Path(r["source"]).name for r in read_records(run_dir / "manifest.csv")}
            truth = np.array([f.name.split("-")[0] == target for f in inputs])
            keep = np.array([f.name in kept for f in inputs])
            p, r = prf(keep, truth)
            thr = json.loads((run_dir / "threshold.json").read_text(encoding="utf-8"))
            out.append(
                StageCase(
                    case, target, p, r, thr["value"], thr["rule"], len(inputs), int(truth.sum())
                )
            )
            log.info(
                "stage %s %s: P %.3f R %.3f (%s %.3f)",
                case,
                target,
                p,
                r,
                thr["rule"],
                thr["value"],
            )
    return out


def stage_table(cases: list[StageCase]) -> str:
    """Markdown: per case, mean and worst precision/recall of the stage's runs, and per target."""
    header = ["case", "precision mean", "precision worst", "recall mean", "recall worst"]
    out = []
    for case in ("clean", "hard"):
        cs = [c for c in cases if c.case == case]
        p = np.array([c.precision for c in cs])
        r = np.array([c.recall for c in cs])
        per = ", ".join(f"{c.target} {c.precision:.2f}/{c.recall:.2f}" for c in cs)
        out.append(
            [case, f"{p.mean():.3f}", f"{p.min():.3f}", f"{r.mean():.3f}", f"{r.min():.3f}", per]
        )
    return markdown_table([*header, "per target (P/R)"], out)


if __name__ == "__main__":
    main()
