"""Scores and thresholds of the speaker filter (the methods measured in RESEARCH.md).

Score: the cosine of a slice's embedding to the profile's enrollment vector (``similarity``),
and that cosine normalised by adaptive symmetric S-norm (AS-norm, top-k 100) against the bundled
cohort of 120 LibriSpeech speakers (``score``; without a cohort, the cosine itself).

Threshold rules are pluggable: a :data:`ThresholdRule` takes the profile, the cohort (or None)
and the slices' scores and returns a :class:`Threshold` (value and a one-line reason). The
default ``auto`` rule is the cohort-impostor bound (method d of RESEARCH.md): the highest
normalised score any cohort item reaches against the profile, each cohort speaker normalised
with a cohort that leaves that speaker out."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from speaker_filter.profile import Profile

TOP_K = 100


@dataclass(frozen=True)
class Cohort:
    """Embeddings of impostor speakers (n, 256) and the speaker of each row."""

    emb: np.ndarray
    speakers: np.ndarray


@dataclass(frozen=True)
class Threshold:
    """A threshold on the ``score`` column and why it is there."""

    value: float
    rule: str
    reason: str

    def describe(self) -> str:
        return f"{self.rule}: {self.reason}"


@functools.cache
def bundled_cohort() -> Cohort:
    """The committed cohort (speaker_filter/cohort_embeddings.npy + .json)."""
    from speaker_filter.make_cohort import COHORT_JSON, COHORT_NPY

    emb = np.load(COHORT_NPY).astype(np.float64)
    rows = json.loads(COHORT_JSON.read_text(encoding="utf-8"))["rows"]
    return Cohort(unit(emb), np.array([r["speaker"] for r in rows]))


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def topk_stats(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the ``k`` highest scores of each row of ``scores`` (n, c)."""
    k = min(k, scores.shape[1])
    top = -np.sort(-scores, axis=1)[:, :k]
    return top.mean(axis=1), top.std(axis=1) + 1e-9


def asnorm(enroll: np.ndarray, tests: np.ndarray, cohort: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """AS-norm of cos(enroll, tests) (tests: (n, 256)) against ``cohort`` (c, 256)."""
    e, t, c = unit(enroll), unit(tests), unit(cohort)
    raw = t @ e
    me, se = topk_stats((c @ e)[None, :], k)
    mt, st = topk_stats(t @ c.T, k)
    return 0.5 * ((raw - me[0]) / se[0] + (raw - mt) / st)


def score(
    enroll: np.ndarray, tests: np.ndarray, cohort: Cohort | None
) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, score) of each row of ``tests``: raw cosine, and AS-norm (or the cosine
    when there is no cohort). NaN rows (no speech) give NaN."""
    tests = np.atleast_2d(np.asarray(tests, dtype=np.float64))
    sim = unit(tests) @ unit(enroll)
    if cohort is None:
        return sim, sim.copy()
    return sim, asnorm(enroll, tests, cohort.emb)


def cohort_bound_scores(enroll: np.ndarray, cohort: Cohort, k: int = TOP_K) -> np.ndarray:
    """Normalised scores of every cohort item against ``enroll``, leave-speaker-out."""
    out = np.empty(len(cohort.emb))
    for s in np.unique(cohort.speakers):
        own = cohort.speakers == s
        out[own] = asnorm(enroll, cohort.emb[own], cohort.emb[~own], k)
    return out


ThresholdRule = Callable[["Profile", Cohort | None, np.ndarray], Threshold]


def cohort_bound_rule(profile: Profile, cohort: Cohort | None, scores: np.ndarray) -> Threshold:
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


RULES: dict[str, ThresholdRule] = {"auto": cohort_bound_rule}


def pick_threshold(
    setting: float | str,
    profile: Profile,
    cohort: Cohort | None,
    scores: np.ndarray,
    rules: dict[str, ThresholdRule] = RULES,
) -> Threshold:
    """The threshold for ``setting``: a number as given, or a rule's choice by name."""
    if isinstance(setting, int | float):
        return Threshold(float(setting), "given", "set in the config / --threshold")
    return rules[setting](profile, cohort, scores)
