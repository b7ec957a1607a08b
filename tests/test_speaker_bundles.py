"""The speaker filter's analysis bundles (issue 24): after the loop, the threshold is chosen over
every slice of the folder, but a run reads one bundle per track and compares only the slices of
changed tracks with the cohort — counted here, on synthetic caches (no model)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from malmoi.config import SpeakerFilterConfig
from speaker_filter import score as score_module
from speaker_filter import stage as stage_module
from speaker_filter import turns
from speaker_filter.cohort import bundled_cohort
from speaker_filter.score import asnorm, cohort_stats
from speaker_filter.stage import BUNDLES, SpeakerFilterStage

SLICES = 6  # per track
WINDOWS = 3  # full 1.5-s windows per slice


def _stage(out: Path) -> SpeakerFilterStage:
    return SpeakerFilterStage(SpeakerFilterConfig(references=[Path("ref.wav")]), out)


def _track(stage: SpeakerFilterStage, track: str, rng: np.random.Generator) -> list[dict]:
    """A track's slices: their per-slice caches (embedding, windows, speech) and their rows."""
    rows = []
    for k in range(SLICES):
        sid = f"{track}.{k:04d}"
        win = rng.normal(size=(WINDOWS + 1, 256)).astype(np.float32)
        w = turns.WINDOW  # full windows, then a short one at the end
        frames = np.array([[0, w], [75, 75 + w], [150, 150 + w], [225, 300]], dtype=np.int32)
        stage._store(sid, f"fp-{sid}", rng.normal(size=256).astype(np.float32), 2.5 + k,
                     win=win, win_frames=frames, frame_time=np.zeros(301, np.float32))  # fmt: skip
        rows.append({"id": sid, "key": f"key-{sid}", "path": f"{track}/{sid}.wav"})
    return rows


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Per-slice caches read and rows compared with the cohort."""
    found = {"caches": 0, "cohort_rows": 0}
    cache, stats = SpeakerFilterStage._cache, score_module.cohort_stats

    def counted_cache(self: SpeakerFilterStage, slice_id: str) -> dict[str, Any]:
        found["caches"] += 1
        return cache(self, slice_id)

    def counted_stats(tests: np.ndarray, cohort: Any, k: int = score_module.TOP_K) -> np.ndarray:
        found["cohort_rows"] += len(np.atleast_2d(tests))
        return stats(tests, cohort, k)

    monkeypatch.setattr(SpeakerFilterStage, "_cache", counted_cache)
    monkeypatch.setattr(stage_module, "cohort_stats", counted_stats)
    return found


def test_a_new_track_reads_its_own_caches_only(tmp_path: Path, counted: dict[str, int]) -> None:
    stage = _stage(tmp_path / "sf")
    rng = np.random.default_rng(0)
    rows = [r for t in range(20) for r in _track(stage, f"ep{t:02d}.vocals", rng)]
    caches, bundles = stage._analyses(rows)
    assert len(bundles) == 20 and len(caches) == 20 * SLICES
    assert counted["caches"] == 20 * SLICES  # made once from the caches
    assert counted["cohort_rows"] == 20 * SLICES * (1 + WINDOWS)  # slices and full windows

    for key in counted:
        counted[key] = 0
    rows += _track(stage, "new.vocals", rng)
    again = _stage(tmp_path / "sf")
    caches, bundles = again._analyses(rows)
    assert len(caches) == 21 * SLICES
    assert counted == {"caches": SLICES, "cohort_rows": SLICES * (1 + WINDOWS)}

    # a changed key (the slice made again from another input) makes its track's bundle again
    for key in counted:
        counted[key] = 0
    rows[0] = {**rows[0], "key": "key-changed"}
    _stage(tmp_path / "sf")._analyses(rows)
    assert counted["caches"] == SLICES
    # a track no longer in the tables loses its bundle
    _stage(tmp_path / "sf")._analyses([r for r in rows if not r["id"].startswith("ep00")])
    assert not (tmp_path / "sf" / "embeddings" / BUNDLES / "ep00.vocals.npz").exists()


def test_a_bundle_holds_what_the_caches_hold(tmp_path: Path) -> None:
    """The bundle's embedding, speech and cohort statistics are the cache's, and AS-norm with
    the stored statistics is AS-norm computed from the cohort."""
    stage = _stage(tmp_path / "sf")
    rows = _track(stage, "ep.vocals", np.random.default_rng(1))
    caches, _ = stage._analyses(rows)
    cohort = bundled_cohort()
    enroll = np.random.default_rng(2).normal(size=256)
    for r in rows:
        cache = stage._cache(r["id"])
        got = caches[r["id"]]
        assert np.array_equal(got["emb"], cache["emb"].astype(np.float64))
        assert got["speech"] == float(cache["speech"]) and got["windows"] == WINDOWS
        direct = asnorm(enroll, cache["emb"][None, :].astype(np.float64), cohort.emb)
        stored = asnorm(enroll, got["emb"][None, :], cohort.emb, stats=got["stats"][None, :])
        assert np.allclose(direct, stored, rtol=0, atol=1e-12)
        assert np.allclose(got["stats"], cohort_stats(cache["emb"], cohort)[0], atol=1e-12)
