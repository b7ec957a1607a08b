"""Scores and thresholds of the speaker filter (the methods measured in RESEARCH.md).

Score: the cosine of a slice's embedding to the profile's enrollment vector (``similarity``),
and that cosine normalised by adaptive symmetric S-norm (AS-norm, top-k 100) against the bundled
cohort of 120 LibriSpeech speakers (``score``; without a cohort, the cosine itself).

Threshold rules are pluggable: a :data:`ThresholdRule` takes the profile, the cohort (or None)
and the run's slices (:class:`RunScores`: embeddings and scores) and returns a
:class:`Threshold`: the value, the column it applies to, and a one-line reason.

- ``auto`` (:func:`self_enrollment_rule`, method r of RESEARCH.md): the slices above the
  cohort-impostor bound are the target for sure; their mean embedding is a second, in-domain
  enrollment (same channel, same music residue as the rest of the run), every slice's cosine to
  it is ``self_similarity`` (leave-one-out for those slices), and the cut is where Gaussians
  fitted to the confident slices' and the other slices' ``self_similarity`` cross (prior: the
  confident share). Falls back to the bound when either side has fewer than 2 slices.
- ``cohort-bound`` (:func:`cohort_bound_rule`, method d): the highest normalised score any
  cohort item reaches against the profile, each cohort speaker normalised with a cohort that
  leaves that speaker out.
- a number: a threshold on ``score`` as given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from speaker_filter.cohort import Cohort, unit

if TYPE_CHECKING:
    from speaker_filter.profile import Profile

TOP_K = 100


@dataclass(frozen=True)
class RunScores:
    """The slices of a run a threshold is chosen for: embeddings (n, 256, no NaN), the cosine
    to the profile (``similarity``) and the normalised score (``score``)."""

    emb: np.ndarray
    similarity: np.ndarray
    score: np.ndarray
    stats: np.ndarray | None = None  # the slices' cohort_stats, when known


@dataclass(frozen=True)
class Threshold:
    """A threshold on one column of the slices (``column``; its values per slice in
    ``values``, aligned with :class:`RunScores`) and why it is there."""

    value: float
    rule: str
    reason: str
    column: str = "score"
    values: np.ndarray | None = None
    # self_similarity: the run's own voice model, as the rows of RunScores it is made of
    members: np.ndarray | None = None

    def keep(self, run: RunScores) -> np.ndarray:
        """Which of the run's slices the threshold keeps."""
        values = run.score if self.values is None else self.values
        return values >= self.value

    def describe(self) -> str:
        return f"{self.rule}: {self.reason}"


def topk_stats(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the ``k`` highest scores of each row of ``scores`` (n, c)."""
    k = min(k, scores.shape[1])
    top = -np.sort(-scores, axis=1)[:, :k]
    return top.mean(axis=1), top.std(axis=1) + 1e-9


def asnorm(
    enroll: np.ndarray,
    tests: np.ndarray,
    cohort: np.ndarray,
    k: int = TOP_K,
    stats: np.ndarray | None = None,
) -> np.ndarray:
    """AS-norm of cos(enroll, tests) (tests: (n, 256)) against ``cohort`` (c, 256).
    ``stats``: the tests' side of it when known (:func:`cohort_stats` of ``tests``)."""
    e, t = unit(enroll), unit(tests)
    raw = t @ e
    if stats is None:
        c = unit(cohort)
        me, se = topk_stats((c @ e)[None, :], k)
        mt, st = topk_stats(t @ c.T, k)
    else:  # the enrollment's side, once per enrollment and cohort (slices are scored in groups)
        me, se = _enroll_stats(e, cohort, k)
        mt, st = stats[:, 0], stats[:, 1]
    return 0.5 * ((raw - me[0]) / se[0] + (raw - mt) / st)


_ENROLL_STATS: dict[tuple[int, bytes, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _enroll_stats(e: np.ndarray, cohort: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk_stats` of the unit enrollment ``e`` against ``cohort``, remembered for the
    last few (enrollment, cohort) pairs (the cohort held, so its id is not reused)."""
    key = (id(cohort), e.tobytes(), k)
    found = _ENROLL_STATS.get(key)
    if found is None or found[0] is not cohort:
        if len(_ENROLL_STATS) > 16:
            _ENROLL_STATS.clear()
        me, se = topk_stats((unit(cohort) @ e)[None, :], k)
        found = _ENROLL_STATS[key] = (cohort, me, se)
    return found[1], found[2]


def cohort_stats(tests: np.ndarray, cohort: Cohort, k: int = TOP_K) -> np.ndarray:
    """The tests' side of AS-norm, (n, 2): the mean and std of each row's ``k`` highest
    cosines to the cohort. It depends on the embeddings and the cohort, not on the profile,
    so it is computed once per slice and stored (the speaker filter's analysis bundles): a
    run scores the slices done before without comparing them with the cohort again."""
    t = unit(np.atleast_2d(np.asarray(tests, dtype=np.float64)))
    mt, st = topk_stats(t @ unit(cohort.emb).T, k)
    return np.stack([mt, st], axis=1)


def score(
    enroll: np.ndarray,
    tests: np.ndarray,
    cohort: Cohort | None,
    stats: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, score) of each row of ``tests``: raw cosine, and AS-norm (or the cosine
    when there is no cohort). NaN rows (no speech) give NaN. ``stats``: the rows'
    :func:`cohort_stats` when known."""
    tests = np.atleast_2d(np.asarray(tests, dtype=np.float64))
    sim = unit(tests) @ unit(enroll)
    if cohort is None:
        return sim, sim.copy()
    return sim, asnorm(enroll, tests, cohort.emb, stats=stats)


def cohort_bound_scores(enroll: np.ndarray, cohort: Cohort, k: int = TOP_K) -> np.ndarray:
    """Normalised scores of every cohort item against ``enroll``, leave-speaker-out."""
    out = np.empty(len(cohort.emb))
    for s in np.unique(cohort.speakers):
        own = cohort.speakers == s
        out[own] = asnorm(enroll, cohort.emb[own], cohort.emb[~own], k)
    return out


ThresholdRule = Callable[["Profile", Cohort | None, RunScores], Threshold]

SD_FLOOR = 0.02  # cosine units: a Gaussian fitted to a few near-identical slices needs a floor
MIN_SIDE = 2  # slices needed on each side of the bound to enroll in-domain
MAX_ROUNDS = 10  # re-enrollment rounds (the partition is stable after <= 5 on the bench)


def gaussian_crossing(pos: np.ndarray, neg: np.ndarray, prior: float) -> float | None:
    """The value between the means where Gaussians fitted to ``neg`` and ``pos`` (weights
    ``1 - prior`` and ``prior``; sd floored at :data:`SD_FLOOR`) are equally likely; None when
    ``pos`` does not lie above ``neg``."""
    mp, sp = float(np.mean(pos)), max(float(np.std(pos)), SD_FLOOR)
    mn, sn = float(np.mean(neg)), max(float(np.std(neg)), SD_FLOOR)
    if mp <= mn:
        return None
    grid = np.linspace(mn, mp, 4096)
    lp = np.log(prior) - 0.5 * ((grid - mp) / sp) ** 2 - np.log(sp)
    ln = np.log(1 - prior) - 0.5 * ((grid - mn) / sn) ** 2 - np.log(sn)
    above = np.flatnonzero(lp >= ln)
    return float(grid[above[0]]) if len(above) else 0.5 * (mn + mp)


def self_similarity(emb: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Cosine of every row of ``emb`` to the mean of the ``seeds`` rows; a seed row is compared
    with the mean of the other seeds (leave-one-out), so it is not its own evidence."""
    u = unit(emb)
    total = u[seeds].sum(axis=0)
    out = u @ unit(total)
    n = int(seeds.sum())
    for i in np.flatnonzero(seeds):
        out[i] = float(u[i] @ unit(total - u[i])) if n > 1 else np.nan
    return out


def clean_bound_seeds(profile: Profile, cohort: Cohort, run: RunScores) -> np.ndarray:
    """The run's slices above the cohort bound of the profile's clean references alone (no
    music crops): the music crops raise every music-residue slice's score, impostors' too
    (RESEARCH.md, round 3), so a sure slice must pass both enrollments' bounds."""
    clean = unit(unit(profile.refs).mean(axis=0))
    bound = float(cohort_bound_scores(clean, cohort).max())
    return asnorm(clean, run.emb, cohort.emb, stats=run.stats) >= bound


def self_enrollment_rule(profile: Profile, cohort: Cohort | None, run: RunScores) -> Threshold:
    """``auto``: in-domain re-enrollment on the slices above the cohort bounds, repeated with the
    kept slices as the next seeds until the partition is stable (module docstring); the bound
    itself when either side is too small to fit."""
    bound = cohort_bound_rule(profile, cohort, run)
    seeds = bound.keep(run)
    if cohort is not None and len(profile.crops):
        seeds &= clean_bound_seeds(profile, cohort, run)
    n_seed, n_other = int(seeds.sum()), int((~seeds).sum())
    if n_seed < MIN_SIDE or n_other < MIN_SIDE:
        return Threshold(
            bound.value,
            bound.rule,
            f"{bound.reason}; no in-domain enrollment ({n_seed} slices above it, {n_other} "
            f"below; {MIN_SIDE} needed on each side)",
        )
    keep, cut, sims, members, rounds = seeds, None, None, seeds, 0
    while rounds < MAX_ROUNDS and keep.sum() >= MIN_SIDE and (~keep).sum() >= MIN_SIDE:
        rounds += 1
        round_sims = self_similarity(run.emb, keep)
        round_cut = gaussian_crossing(round_sims[keep], round_sims[~keep], float(keep.mean()))
        if round_cut is None:
            break
        cut, sims, members = round_cut, round_sims, keep
        new = sims >= cut
        if (new == keep).all():
            break
        keep = new
    if cut is None or sims is None:
        return Threshold(
            bound.value,
            bound.rule,
            f"{bound.reason}; the {n_seed} slices above it are no closer to each other than to "
            "the rest, so no in-domain enrollment",
        )
    keep = sims >= cut
    return Threshold(
        cut,
        "self-enrollment",
        f"{n_seed} slices above the cohort bound {bound.value:.2f} (and the clean references' "
        f"bound) seeded the run's own voice model; after {rounds} round(s) {int(keep.sum())} "
        f"slices, cut where Gaussians on their leave-one-out similarity (mean "
        f"{sims[keep].mean():.3f}) and the other slices' (mean {sims[~keep].mean():.3f}) cross",
        column="self_similarity",
        values=sims,
        members=members,
    )


LONG = 4.0  # seconds of speech: from here on a slice is cut where the run's rule put the cut
SHORT = 1.5  # seconds: the windows' length; the cut calibrated on them holds at and below it


@dataclass(frozen=True)
class LengthCut:
    """The cut for a slice of a given length of speech: the run's rule's cut for slices of
    :data:`LONG` seconds or more; for shorter ones, down to the cut where the 1.5-s windows of
    the kept and the rejected slices separate (``short``), linearly in between. A short slice's
    embedding is noisier and lies lower, the target's as well as the others' (issue 22)."""

    long: float
    short: float | None = None

    def at(self, speech: np.ndarray | float) -> np.ndarray:
        s = np.asarray(speech, dtype=np.float64)
        if self.short is None:
            return np.full(s.shape, self.long)
        w = np.clip((s - SHORT) / (LONG - SHORT), 0.0, 1.0)
        return self.short + w * (self.long - self.short)


def length_cut(thr: Threshold, kept: np.ndarray, rejected: np.ndarray) -> LengthCut:
    """:class:`LengthCut` from the values (``thr``'s column) of the 1.5-s windows of the kept
    (``kept``) and the rejected (``rejected``) slices: the crossing of Gaussians fitted to them
    (equal priors), never above the run's cut."""
    if len(kept) < MIN_SIDE or len(rejected) < MIN_SIDE:
        return LengthCut(thr.value)
    c = gaussian_crossing(kept, rejected, 0.5)
    if c is None:
        return LengthCut(thr.value)
    return LengthCut(thr.value, min(c, thr.value))


def model_values(
    thr: Threshold,
    run: RunScores,
    enroll: np.ndarray,
    cohort: Cohort | None,
    emb: np.ndarray,
    owner: np.ndarray,
    stats: np.ndarray | None = None,
) -> np.ndarray:
    """``thr``'s column for more embeddings ``emb`` (parts and windows of the run's slices;
    ``owner``: the row of ``run`` each comes from, -1 for none): with ``self_similarity`` the
    cosine to the run's voice model, leaving the owner out when it is a member (as the
    members' own values are); else the score against ``enroll`` (``stats``: the rows'
    :func:`cohort_stats` when known)."""
    if thr.members is None:
        return score(enroll, emb, cohort, stats)[1]
    u = unit(np.asarray(emb, dtype=np.float64))
    run_unit, total = _voice_model(run.emb, thr.members)
    out = u @ unit(total)
    in_model = np.zeros(len(run.emb) + 1, dtype=bool)
    in_model[:-1] = thr.members
    own = (owner >= 0) & in_model[owner] & (int(thr.members.sum()) > 1)
    if own.any():
        rest = total[None, :] - run_unit[owner[own]]
        out[own] = np.sum(u[own] * unit(rest), axis=1)
    return out


_VOICE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _voice_model(emb: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The run's unit embeddings and the sum of its members' (the voice model), remembered for
    the last few runs: :func:`model_values` is called for every group of parts and every
    bundle of windows of a build, and the run is every slice of it (the arrays held, so their
    ids are not reused)."""
    key = (id(emb), id(members))
    found = _VOICE.get(key)
    if found is None or found[0] is not emb or found[1] is not members:
        if len(_VOICE) > 4:
            _VOICE.clear()
        run_unit = unit(np.asarray(emb, dtype=np.float64))
        found = _VOICE[key] = (emb, members, run_unit, run_unit[members].sum(axis=0))
    return found[2], found[3]


def cohort_bound_rule(profile: Profile, cohort: Cohort | None, run: RunScores) -> Threshold:
    """The cohort-impostor bound (RESEARCH.md method d); without a cohort, the lowest
    leave-one-out similarity of a reference clip or its music crops (method c)."""
    if cohort is not None:
        bound = cohort_bound_scores(profile.enroll, cohort)
        top = int(np.argmax(bound))
        return Threshold(
            float(bound[top]),
            "cohort-bound",
            f"highest normalised score of {len(bound)} cohort impostor items "
            f"({len(np.unique(cohort.speakers))} speakers; top: speaker {cohort.speakers[top]})",
        )
    loo = profile.leave_one_out()
    if loo.size == 0:
        raise ValueError("auto threshold without a cohort needs at least 2 reference clips")
    return Threshold(
        float(np.min(loo)),
        "reference-loo",
        f"lowest leave-one-out similarity of {loo.size} reference clips and crops",
    )


RULES: dict[str, ThresholdRule] = {
    "auto": self_enrollment_rule,
    "cohort-bound": cohort_bound_rule,
}


def pick_threshold(
    setting: float | str,
    profile: Profile,
    cohort: Cohort | None,
    run: RunScores,
    rules: dict[str, ThresholdRule] = RULES,
) -> Threshold:
    """The threshold for ``setting``: a number (on ``score``) as given, or a rule's choice."""
    if isinstance(setting, int | float):
        return Threshold(float(setting), "given", "set in the config / --threshold")
    return rules[setting](profile, cohort, run)
