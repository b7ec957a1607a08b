"""Issue 11 evaluation: the speaker filter's ``auto`` threshold on the clean and hard cases of
../shared (eval/speaker.py builds them): through the real stage (its own profile with
music crops, the committed cohort) and on the research bench (method r), the issue's bars on the
mean over the 6 targets; plus the research rules' building blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eval import speaker as ev
from speaker_filter.profile import Profile
from speaker_filter.score import Cohort, RunScores, self_enrollment_rule, unit

RULE = "r self-enrollment (the stage's auto)"


def test_gated_context_does_not_lift_an_impostor_next_to_the_target() -> None:
    # one source: target, target, impostor (below the gate), target
    scores = np.array([6.0, 2.0, -1.0, 5.0])
    group = np.zeros(4, dtype=int)
    pos = np.arange(4)
    out = ev.gated_context(scores, group, pos, lower=1.0)
    assert out[2] == -1.0  # below the gate: keeps its own score
    assert out[1] == pytest.approx(4.0)  # lifted by its target neighbour only (not by pos 2)
    assert out[3] == 5.0  # its only neighbour is below the gate


def test_kde_negative_mixture_keeps_the_cohort_tail_as_negative() -> None:
    rng = np.random.default_rng(0)
    neg = np.concatenate([rng.normal(-2, 1.5, 400), [3.0, 3.2]])  # cohort with a heavy tail
    slices = np.concatenate([rng.normal(-2, 1.5, 150), rng.normal(5, 1.0, 15)])
    thr, w = ev.kde_negative_mixture(slices, neg, np.array([5.5, 6.0, 4.5]))
    assert 0.05 < w < 0.2
    # above the cohort's tail items, below the target mass
    assert 3.0 < thr < 4.5


def test_self_enrollment_falls_back_to_the_bound_with_too_few_sure_slices() -> None:
    rng = np.random.default_rng(0)
    target = unit(rng.normal(size=256))
    cohort = Cohort(unit(rng.normal(size=(200, 256))), np.repeat(np.arange(50).astype(str), 4))
    refs = unit(target + 0.3 * unit(rng.normal(size=(3, 256))))
    profile = Profile("t", refs, np.zeros((0, 256)), np.zeros(0, dtype=np.int64))
    # one slice of the target among impostors: nothing to enroll in-domain
    emb = np.vstack([unit(target + 0.3 * unit(rng.normal(size=256))), cohort.emb[:20]])
    from speaker_filter.score import asnorm

    run = RunScores(emb, emb @ profile.enroll, asnorm(profile.enroll, emb, cohort.emb))
    thr = self_enrollment_rule(profile, cohort, run)
    assert thr.rule == "cohort-bound" and thr.values is None, thr
    assert "no in-domain enrollment" in thr.reason
    assert thr.keep(run).tolist() == [True] + [False] * 20
    # many target slices: the run's own enrollment decides, on self_similarity
    emb = np.vstack([unit(target + 0.3 * unit(rng.normal(size=(8, 256)))), cohort.emb[:20]])
    run = RunScores(emb, emb @ profile.enroll, asnorm(profile.enroll, emb, cohort.emb))
    thr = self_enrollment_rule(profile, cohort, run)
    assert thr.rule == "self-enrollment" and thr.column == "self_similarity"
    assert thr.keep(run).tolist() == [True] * 8 + [False] * 20


def means(rows: list, case: str) -> tuple[float, float]:
    sel = [r for r in rows if r["case"] == case]
    return float(np.mean([r["precision"] for r in sel])), float(np.mean([r["recall"] for r in sel]))


@pytest.mark.slow
def test_the_stage_reaches_the_bars_on_the_clean_and_hard_cases(
    shared: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each of the 6 speakers the target of a real stage run (3 references) over the other 57
    utterances (clean) and over 162 2-s crops with music at 10 dB SNR (hard)."""
    cases = ev.stage_evaluate(shared / "data", tmp_path_factory.mktemp("stage-eval"))
    print("\n" + ev.stage_table(cases))
    rows = [vars(c) for c in cases]
    assert all(c.rule == "self-enrollment" for c in cases), [(c.case, c.rule) for c in cases]
    p, r = means(rows, "clean")
    assert p >= 0.95 and r >= 0.9, (p, r)
    p, r = means(rows, "hard")
    assert p >= 0.95 and r >= 0.85, (p, r)


@pytest.mark.slow
def test_the_rule_reaches_the_bars_on_the_research_bench(shared: Path, tmp_path: Path) -> None:
    """Method r (the stage's rule) on the bench's own profile (music crops of another piece)
    and cohort: the same bars, so the rule does not hinge on one enrollment recipe."""
    cache = ev.REPO / ".cache" / "speaker_filter_eval.npz"
    data = ev.build(shared / "data", cache if cache.exists() else tmp_path / "eval.npz")
    rows = [r for r in ev.evaluate(data) if r["method"] == RULE]
    p, r = means(rows, "clean")
    assert p >= 0.95 and r >= 0.9, (p, r)
    p, r = means(rows, "hard")
    assert p >= 0.95 and r >= 0.85, (p, r)
