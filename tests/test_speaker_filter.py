"""The speaker filter stage on LibriSpeech utterances of ../shared: kept/rejected, resume,
threshold changes without embedding, saved profiles, the dominant voice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from malmoi.config import SpeakerFilterConfig
from malmoi.manifest import read_records
from tests.conftest import utterances

TARGET = "1688"
OTHERS = ("2609", "3005")


def items_of(paths: list[Path]):
    from ingest.local import discover

    return list(discover(paths, ["flac"]))


def speaker_of(rec: dict) -> str:
    return Path(rec["source"]).name.split("-")[0]


@pytest.fixture(scope="module")
def case(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run: target refs = its utterances 0-2, inputs = its 3-6 and 3 of each other's."""
    from speaker_filter.stage import SpeakerFilterStage

    root = tmp_path_factory.mktemp("spk")
    slices = root / "slices"
    slices.mkdir()
    inputs = utterances(shared, TARGET)[3:7] + [
        f for s in OTHERS for f in utterances(shared, s)[3:6]
    ]
    for f in inputs:  # copies: the test touches their mtimes
        shutil.copy(f, slices / f.name)
    params = SpeakerFilterConfig(
        references=utterances(shared, TARGET)[:3], profile="t1688", profiles_dir=root / "profiles"
    )
    out = root / "out"
    stage = SpeakerFilterStage(params, out)
    report = stage.run(items_of([slices]))
    return {
        "root": root,
        "slices": slices,
        "out": out,
        "params": params,
        "stage": stage,
        "report": report,
    }


def test_keeps_the_target_and_lists_the_rejected_with_reasons(case: dict) -> None:
    out = case["out"]
    kept = read_records(out / "manifest.csv")
    rejected = read_records(out / "rejected.csv")
    assert case["report"].processed == 10
    assert case["stage"].embedded == 10
    wholes = [r for r in rejected if not r["part_of"]]  # the rest: parts judged alike
    assert len(kept) + len(wholes) == 10
    assert all(not r["part_of"] for r in kept)  # one voice per clip: no split kept
    assert {speaker_of(r) for r in kept} == {TARGET}, kept
    assert len(kept) >= 3  # recall >= 0.75 on clean utterances
    thr = json.loads((out / "threshold.json").read_text())
    assert thr["rule"] == "self-enrollment", thr
    assert thr["column"] == "self_similarity" and "above the cohort bound" in thr["reason"]
    for r in wholes:
        assert "self_similarity" in r["reason"] and "(auto: self-enrollment)" in r["reason"]
    for r in kept + wholes:
        # the run's cut, or lower for a slice with less than 4 s of speech (length-aware)
        assert thr["short_value"] - 1e-3 <= float(r["threshold"]) <= thr["value"] + 1e-3
        assert r["similarity"] and r["score"] and r["self_similarity"]
        assert (out / r["path"]).exists()
    assert all(float(r["self_similarity"]) >= float(r["threshold"]) for r in kept)
    assert all(float(r["self_similarity"]) < float(r["threshold"]) for r in wholes)
    assert (out / "scores.png").stat().st_size > 1000
    caches = [p for p in (out / "embeddings").glob("*.npz") if "." not in p.stem]
    assert len(caches) == 10


def test_second_run_processes_nothing(case: dict) -> None:
    from speaker_filter.stage import SpeakerFilterStage

    stage = SpeakerFilterStage(case["params"], case["out"])
    report = stage.run(items_of([case["slices"]]))
    assert report.processed == 0 and report.skipped == 10
    assert stage.embedded == 0
    assert stage.pending(items_of([case["slices"]])) == 0


def test_threshold_change_and_rescore_recompute_no_embedding(case: dict) -> None:
    from speaker_filter.stage import SpeakerFilterStage

    out = case["out"]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "embeddings").glob("*.npz")}
    kept0 = {r["id"] for r in read_records(out / "manifest.csv")}
    scores = sorted(float(r["score"]) for r in read_records(out / "manifest.csv"))
    high = case["params"].model_copy(update={"threshold": (scores[-1] + scores[-2]) / 2})
    stage = SpeakerFilterStage(high, out)
    assert stage.pending(items_of([case["slices"]])) == 1  # the partition is stale
    report = stage.run(items_of([case["slices"]]))
    assert report.processed == 0 and stage.embedded == 0
    kept = read_records(out / "manifest.csv")
    assert len(kept) == 1 and {r["id"] for r in kept} < kept0
    moved = [r for r in read_records(out / "rejected.csv") if r["id"] in kept0]
    assert moved and all(
        "(given" not in r["reason"] and "below threshold" in r["reason"] for r in moved
    )
    progress = {r["id"]: r for r in read_records(out / "progress.csv")}
    assert json.loads(progress[kept[0]["id"]]["outputs"]) == [kept[0]["id"]]
    # --rescore: every item through process() again, embeddings from the cache
    stage = SpeakerFilterStage(case["params"], out)
    report = stage.run(items_of([case["slices"]]), force=True)
    assert report.processed == 10 and stage.embedded == 0
    assert stage.embedder is None  # every embedding and the profile were on disk: no encoder
    assert {r["id"] for r in read_records(out / "manifest.csv")} == kept0
    assert all((out / r["path"]).exists() for r in read_records(out / "manifest.csv"))
    assert SpeakerFilterStage(case["params"], out).pending(items_of([case["slices"]])) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "embeddings").glob("*.npz")}
    assert after == before


def test_profile_round_trip(case: dict) -> None:
    from speaker_filter.profile import load_profile
    from speaker_filter.stage import SpeakerFilterStage

    folder = case["root"] / "profiles"
    prof = load_profile("t1688", folder)
    meta = json.loads((folder / "t1688.json").read_text())
    assert prof.refs.shape == (3, 256) and len(prof.crops) >= 3
    assert meta["digest"] == prof.digest == case["stage"].digest
    assert len(meta["clips"]) == 3 and all(len(c["sha256"]) == 64 for c in meta["clips"])
    np.testing.assert_allclose(np.load(folder / "t1688.npz")["mean"], prof.enroll, atol=1e-6)
    # the saved profile, by name only, in another folder: same scores, no recomputed embedding
    by_name = SpeakerFilterConfig(profile="t1688", profiles_dir=folder)
    out2 = case["root"] / "out2"
    shutil.copytree(case["out"] / "embeddings", out2 / "embeddings")
    stage = SpeakerFilterStage(by_name, out2)
    stage.run(items_of([case["slices"]]))
    assert stage.embedded == 0
    a = {r["id"]: r["score"] for r in read_records(case["out"] / "manifest.csv")}
    b = {r["id"]: r["score"] for r in read_records(out2 / "manifest.csv")}
    assert a == b


def test_dominant_keeps_the_most_frequent_voice(shared: Path, tmp_path: Path) -> None:
    from speaker_filter.stage import SpeakerFilterStage

    inputs = utterances(shared, TARGET)[:6] + [f for s in OTHERS for f in utterances(shared, s)[:2]]
    stage = SpeakerFilterStage(SpeakerFilterConfig(dominant=True), tmp_path / "out")
    stage.run(items_of(inputs))
    kept = read_records(tmp_path / "out" / "manifest.csv")
    share = sum(speaker_of(r) == TARGET for r in kept) / max(1, len(kept))
    assert share >= 0.9, [speaker_of(r) for r in kept]
    assert sum(speaker_of(r) == TARGET for r in kept) >= 5
    assert (
        "dominant voice"
        in json.loads((tmp_path / "out" / "threshold.json").read_text())["dominant"]
    )


def test_cli_saves_a_profile_and_moves_the_threshold(shared: Path, tmp_path: Path) -> None:
    from tests.conftest import run_malmoi

    refs = utterances(shared, TARGET)[:3]
    inputs = [str(f) for f in utterances(shared, TARGET)[3:5] + utterances(shared, OTHERS[0])[3:5]]
    out, profiles = tmp_path / "out", tmp_path / "profiles"
    ref_args = [a for f in refs for a in ("--reference", str(f))]
    common = ["--out", str(out), "--profiles-dir", str(profiles)]
    proc = run_malmoi("speaker-filter", *inputs, *ref_args, "--save-profile", "t", *common)
    assert proc.returncode == 0, proc.stderr
    assert (profiles / "t.npz").exists() and (profiles / "t.json").exists()
    assert {speaker_of(r) for r in read_records(out / "manifest.csv")} == {TARGET}
    proc = run_malmoi("speaker-filter", *inputs, "--profile", "t", "--threshold", "99", *common)
    assert proc.returncode == 0, proc.stderr
    assert read_records(out / "manifest.csv") == []
    wholes = [r for r in read_records(out / "rejected.csv") if not r["part_of"]]
    assert wholes and all("(99.0: given)" in r["reason"] for r in wholes)
    proc = run_malmoi("speaker-filter", *inputs, "--threshold", "often", *common, "--dominant")
    assert proc.returncode == 2 and "auto, cohort-bound or a number" in proc.stderr


def test_pipeline_puts_the_filter_between_segment_and_denoise(tmp_path: Path) -> None:
    from malmoi.config import parse_config
    from malmoi.pipeline import STAGE_NAMES, input_of, spec

    base = {
        "name": "x",
        "output_dir": str(tmp_path),
        "sources": [{"kind": "local", "paths": ["a"]}],
    }
    plain = parse_config(base)
    with_filter = parse_config({**base, "speaker_filter": {"dominant": True}})
    assert STAGE_NAMES.index("segment") < STAGE_NAMES.index("speaker_filter")
    assert STAGE_NAMES.index("speaker_filter") < STAGE_NAMES.index("denoise")
    assert not spec("speaker_filter").used_by(plain)
    assert spec("speaker_filter").used_by(with_filter)
    assert input_of(plain, spec("denoise")) == "segment"
    assert input_of(with_filter, spec("denoise")) == "speaker_filter"
    assert input_of(with_filter, spec("speaker_filter")) == "segment"


def test_items_sent_to_workers_are_embedded_in_batches_by_the_loop(
    shared: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As with ``runner: dask``: the loop's process embeds the slices in batches (prepare), a
    worker's own stage (built from the same config, set up there) scores every slice from that
    cache, never loading the encoder; the partition is the same as a run without workers."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    from speaker_filter.stage import SpeakerFilterStage

    inputs = utterances(shared, TARGET)[3:6] + [
        f for s in OTHERS for f in utterances(shared, s)[3:5]
    ]
    params = SpeakerFilterConfig(references=utterances(shared, TARGET)[:3])
    here = SpeakerFilterStage(params, tmp_path / "out")
    worker = SpeakerFilterStage(params, tmp_path / "out")
    pool = ThreadPoolExecutor(1)

    def submit(item):  # what flows.build's Dask submit does, with a thread for the worker
        def work():
            worker.ensure_setup()
            return worker._timed_process(item)

        return pool.submit(work)

    with caplog.at_level(logging.INFO, logger="malmoi"):
        report = here.run(items_of(inputs), submit=submit, window=2)
    pool.shutdown()
    assert report.processed == len(inputs) and report.failed == 0
    assert here.embedded == len(inputs)  # one batched pass in the loop's process…
    assert [m for m in caplog.messages if "embedded" in m] == [
        f"speaker_filter: embedded {len(inputs)} of {len(inputs)} slices"
    ]
    assert worker.embedded == 0 and worker.embedder is None  # …none on the worker
    alone = SpeakerFilterStage(params, tmp_path / "alone")
    alone.run(items_of(inputs))
    ids = lambda folder, table: sorted(r["id"] for r in read_records(folder / table))  # noqa: E731
    for table in ("manifest.csv", "rejected.csv"):
        assert ids(tmp_path / "out", table) == ids(tmp_path / "alone", table)
    assert {speaker_of(r) for r in read_records(tmp_path / "out/manifest.csv")} == {TARGET}


def test_a_list_option_takes_every_value_a_shell_glob_gives(shared: Path, tmp_path: Path) -> None:
    """``--reference ref/*.wav`` after the inputs: all three clips are references, none is
    taken as an input (click alone made the first the only reference and the rest inputs)."""
    from tests.conftest import run_malmoi

    refs = [str(f) for f in utterances(shared, TARGET)[:3]]
    inputs = [str(f) for f in utterances(shared, TARGET)[3:5] + utterances(shared, OTHERS[0])[3:5]]
    out = tmp_path / "out"
    proc = run_malmoi("speaker-filter", *inputs, "--reference", *refs, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    profile = json.loads((out / "profile.json").read_text())
    assert sorted(Path(c["path"]).name for c in profile["clips"]) == sorted(
        Path(r).name for r in refs
    )
    rows = read_records(out / "manifest.csv") + read_records(out / "rejected.csv")
    ids = {r["id"] for r in rows if not r["part_of"]}  # not the candidate parts of one
    assert len(ids) == len(inputs)  # the inputs, and only them
    # references before the inputs: the inputs would be taken as references; with none left,
    # the command says the inputs are missing rather than guessing
    proc = run_malmoi("speaker-filter", "--reference", *refs, "--out", str(out))
    assert proc.returncode == 2 and "Missing argument" in proc.stderr


def test_profile_messages_name_it_once_and_count_clips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`speaker profile 't' saved in … (1 clip)`; the run's own copy in the stage folder is
    saved without a `speaker profile profile saved` line."""
    import logging

    from speaker_filter.profile import Profile
    from speaker_filter.stage import SpeakerFilterStage

    refs = np.random.default_rng(0).normal(size=(1, 256)).astype("float32")
    crops = np.zeros((0, 256), dtype="float32")
    prof = Profile(
        "t", refs, crops, np.zeros(0, dtype=np.int64), [{"path": "a.wav", "sha256": "ab"}]
    )
    profiles = tmp_path / "profiles"
    with caplog.at_level(logging.INFO, logger="malmoi"):
        prof.save(profiles)
        params = SpeakerFilterConfig(profile="t", profiles_dir=profiles)
        stage = SpeakerFilterStage(params, tmp_path / "out")
        assert stage._profile() is not None
    assert (tmp_path / "out" / "profile.json").exists()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"speaker profile 't' saved in {profiles} (1 clip)"], lines
