"""Segmentation with the real inaSpeechSegmenter models (from the model store) and slicing."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval.separation import speech_track
from malmoi.audio import read_audio
from malmoi.config import SegmentConfig
from malmoi.manifest import read_manifest
from segment.stage import SegmentStage, read_segments
from segment.sweep import sweep_min_duration
from tests.conftest import REPO, model_or_skip, model_store, run_malmoi
from tests.media import write_wav


@pytest.fixture(scope="module")
def smn_model(shared: Path) -> Path:
    """The store with inaSpeechSegmenter's speech/music/noise CNN, copied from ../shared (over
    PyPI only if ../shared lacks it)."""
    return model_or_skip(
        lambda: model_store(shared).path("ina:speech-music-noise"), "ina speech/music/noise model"
    )


@pytest.fixture(scope="module")
def ina_models(smn_model: Path, shared: Path) -> Path:
    """The store with both ina models (speech/music/noise from ../shared, gender over PyPI)."""
    return model_or_skip(lambda: model_store(shared).path("ina:gender"), "ina gender model")


@pytest.fixture(scope="module")
def engine(ina_models: Path):
    """One segmenter for the module, as the stage loads it once per process."""
    from segment.ina import InaEngine

    return InaEngine(
        ina_models / "keras_speech_music_noise_cnn.hdf5", ina_models / "keras_male_female_cnn.hdf5"
    )


def test_musanmix_matches_the_reference_within_0_3_s(engine, shared: Path) -> None:
    ours = engine.segment_file(shared / "data/ina/musanmix.wav")
    ref = read_segments(shared / "data/ina/musanmix-smn-gender.csv")
    assert [s.label for s in ours] == [s.label for s in ref]
    for a, b in zip(ours, ref, strict=True):
        assert abs(a.start - b.start) <= 0.3 and abs(a.stop - b.stop) <= 0.3, (a, b)


def test_gender_cnn_tells_the_two_readers_apart(engine, shared: Path) -> None:
    """lamartine.wav: a woman reads, then a man (the real gender model, from PyPI)."""
    speech = [
        s
        for s in engine.segment_file(shared / "data/ina/lamartine.wav")
        if s.label in ("male", "female")
    ]
    assert {s.label for s in speech if s.stop <= 8.5} == {"female"}
    assert {s.label for s in speech if s.start >= 9.0} == {"male"}


@pytest.fixture(scope="module")
def ten_minutes(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 minutes: LibriSpeech speech with pauses, MUSAN music and noise, and silences."""
    speech = speech_track(shared, 150.0)  # 44.1 kHz, as the pipeline's WAVs
    music = read_audio(shared / "data/ina/musanmix.wav", 44100)
    parts = []
    for _ in range(4):
        parts += [speech, np.zeros(44100 * 3), music[: 44100 * 22]]
    audio = np.concatenate(parts)[: 600 * 44100].astype(np.float32)
    return write_wav(tmp_path_factory.mktemp("long") / "ten_minutes.wav", audio * 0.8, 44100)


def test_chunked_equals_whole_file_away_from_seams(engine, ten_minutes: Path) -> None:
    def track(segments):
        lab = np.empty(int(600 / 0.02), dtype=object)
        for s in segments:
            lab[round(s.start / 0.02) : round(s.stop / 0.02)] = s.label
        return lab

    engine.chunk_seconds, engine.margin_seconds = 0.0, 20.0
    whole = track(engine.segment_file(ten_minutes))
    engine.chunk_seconds = 120.0
    try:
        chunked = track(engine.segment_file(ten_minutes))
    finally:
        engine.chunk_seconds = 300.0
    away = np.ones(len(whole), bool)
    for seam in range(120, 600, 120):
        away[int((seam - 2) / 0.02) : int((seam + 2) / 0.02)] = False
    agreement = float(np.mean(whole[away] == chunked[away]))
    assert agreement >= 0.99, agreement


def test_slices_respect_bounds_and_add_up_to_the_kept_speech(
    ina_models: Path, ten_minutes: Path, tmp_path: Path
) -> None:
    """With no padding and no gap merging, the kept slices are exactly the segment table's
    speech segments (``speech`` with the default gender engine, ``male``/``female`` with ina's
    frame-level one) of at least min_duration, those longer than max_duration cut at
    pauses (every piece of a cut keeps at least min_duration, since min_duration <=
    max_duration / 2): their total is the sum of those segments, by plain arithmetic on
    ``segments.csv``. (Without gap merging no speech segment here exceeds 15 s, hence a
    max_duration of 8 s to have some cut.)"""
    from ingest.local import file_item

    params = SegmentConfig(min_duration=1.0, max_duration=8.0, padding=0.0, max_gap=0.0)
    report = SegmentStage(params, tmp_path).run([file_item(ten_minutes)])
    assert report.processed == 1 and report.failed == 0
    rows = read_manifest(tmp_path)
    durations = np.array([sf.info(p).duration for p in rows["path"]])
    assert len(durations) > 20
    assert durations.min() >= 1.0 and durations.max() <= 8.0 + 1e-6
    folder = tmp_path / rows["parent_id"][0]
    segments = read_segments(folder / "segments.csv")
    speech = [s.stop - s.start for s in segments if s.label in ("male", "female", "speech")]
    assert sum(d > 8.0 for d in speech) >= 3  # some speech was cut
    expected = sum(d for d in speech if d >= 1.0)
    assert abs(durations.sum() - expected) <= 0.01 * expected, (durations.sum(), expected)
    assert (folder / "segments.TextGrid").read_text().startswith('File type = "ooTextFile"')
    # the sweep at the stage's own min_duration re-slices to the same slices
    (at_stage,) = sweep_min_duration(tmp_path, [1.0])
    assert at_stage["slices"] == len(rows)
    assert abs(at_stage["hours"] * 3600 - rows["duration"].sum()) <= len(rows) / 44100


def test_musanmix_slices_add_up_to_the_reference_speech(
    ina_models: Path, shared: Path, tmp_path: Path
) -> None:
    """musanmix.wav: inaSpeechSegmenter's own reference table (musanmix-smn-gender.csv) has
    three male segments, 63.34-68.26, 68.92-71.60 and 72.00-73.82 s, all longer than 1 s and
    shorter than 15 s. Without padding or gap merging the slices are those: 9.42 s in all."""
    from ingest.local import file_item

    reference = (shared / "data/ina/musanmix-smn-gender.csv").read_text().splitlines()[1:]
    male = [
        (float(a), float(b)) for lab, a, b in (ln.split("\t") for ln in reference) if lab == "male"
    ]
    assert len(male) == 3 and all(1.0 <= b - a <= 15.0 for a, b in male)
    expected = sum(b - a for a, b in male)  # 9.42 s
    params = SegmentConfig(min_duration=1.0, max_duration=15.0, padding=0.0, max_gap=0.0)
    report = SegmentStage(params, tmp_path).run([file_item(shared / "data/ina/musanmix.wav")])
    assert report.processed == 1 and report.failed == 0
    rows = read_manifest(tmp_path)
    durations = np.array([sf.info(p).duration for p in rows["path"]])
    assert set(rows["gender"]) == {"male"}
    assert abs(durations.sum() - expected) <= 0.01 * expected, (durations.sum(), expected)


def test_cli_gender_filter_rerun_and_sweep(ina_models: Path, shared: Path, tmp_path: Path) -> None:
    """ina's frame-level gender engine: its labels are in the segment table, so the sweep
    applies the gender filter without the audio."""
    out = tmp_path / "seg"
    args = [
        "segment",
        str(shared / "data/ina/lamartine.wav"),
        "--out",
        str(out),
        "--gender-engine",
        "ina",
        "--gender",
        "male",
        "--min-duration",
        "0.5",
    ]
    proc = run_malmoi(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = read_manifest(out)
    assert set(kept["gender"]) == {"male"} and (kept["start"] >= 8.5).all()
    rejected = read_manifest(out, "rejected.csv")
    assert set(rejected["reason"]) == {"gender female, wanted male"}
    assert "segment: 0 processed, 1 skipped" in run_malmoi(*args).stdout
    # the sweep applies the stage's gender filter: at the stage's own min_duration it counts
    # the stage's kept slices (male only) and hours, and the female slice as other gender
    sweep = run_malmoi(
        "sweep", str(out), "--min-duration", "0.3", "--min-duration", "0.5", "--min-duration", "5"
    )
    assert sweep.returncode == 0, sweep.stderr
    table = {}
    for ln in sweep.stdout.splitlines():
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("0.3", "0.5", "5"):
            table[float(cells[0])] = (int(cells[1]), float(cells[2]), int(cells[3]), int(cells[4]))
    assert set(table) == {0.3, 0.5, 5.0}, sweep.stdout
    female = rejected[rejected["reason"] == "gender female, wanted male"]
    slices, hours, too_short, other = table[0.5]
    assert (slices, too_short, other) == (len(kept), 0, len(female)), sweep.stdout
    assert abs(hours - kept["duration"].sum() / 3600) <= 0.5e-4 + 1e-9, sweep.stdout
    # no region here is long enough to be cut, so a slice's length does not depend on the
    # threshold: 0.3 s changes nothing (nothing was too short at 0.5), 5 s drops the shorter
    assert table[0.3] == table[0.5]
    assert table[5.0][0] == int((kept["duration"] >= 5).sum())
    assert table[5.0][3] == int((female["duration"] >= 5).sum())
    assert "before the gender filter" not in sweep.stdout


def test_embedding_gender_engine(smn_model: Path, shared: Path, tmp_path: Path) -> None:
    """Resemblyzer + the committed classifier tell lamartine's reader (female) from the man who
    follows; needs only the speech/music/noise model, not ina's gender CNN."""
    proc = run_malmoi(
        "segment",
        str(shared / "data/ina/lamartine.wav"),
        "--out",
        str(tmp_path),
        "--gender-engine",
        "embedding",
        "--gender",
        "female",
        "--min-duration",
        "0.5",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_manifest(tmp_path)
    rejected = read_manifest(tmp_path, "rejected.csv")
    assert set(rows["label"]) == {"speech"} and set(rows["gender"]) == {"female"}
    assert (rows["stop"] <= 9.0).all()
    assert "gender male, wanted female" in set(rejected["reason"])
    assert (rejected[rejected["gender"] == "male"]["start"] >= 8.0).all()
    assert 0.5 <= rows.iloc[0]["gender_score"] <= 1.0
    # the sweep cannot re-run the embedding model: it says its counts are before the filter
    sweep = run_malmoi("sweep", str(tmp_path), "--min-duration", "0.5")
    assert sweep.returncode == 0, sweep.stderr
    assert "note: counts are before the gender filter" in sweep.stdout
    (line,) = [ln for ln in sweep.stdout.splitlines() if ln.startswith("| 0.5 |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "n/a"
    by_gender = int((~rejected["reason"].str.startswith("shorter than")).sum())
    assert int(cells[1]) == len(rows) + by_gender  # kept and gender-rejected slices alike


@pytest.mark.slow
def test_gender_classifier_training_reaches_95_percent(shared: Path, tmp_path: Path) -> None:
    """Re-runs the committed training script: speaker-disjoint 5-fold cross-validation over
    the 120 LibriSpeech train-clean-100 speakers (60 F, 60 M); the weights it writes equal
    the committed ones."""
    out = tmp_path / "gender.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "eval.train_gender",
            "--shared",
            str(shared / "data/librispeech"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = json.loads(out.read_text())
    committed = json.loads((REPO / "segment/gender_embedding.json").read_text())
    cv = model["metadata"]["cv"]
    assert cv["mean_full"] >= 0.95 and cv["mean_crops"] >= 0.95, cv
    # the coefficients reach 2500 in magnitude: equal up to float rounding across torch threads
    assert np.allclose(model["coef"], committed["coef"], rtol=1e-4, atol=1e-2)


def test_missing_model_is_a_clear_error(shared: Path, tmp_path: Path) -> None:
    proc = run_malmoi(
        "segment",
        str(shared / "data/ina/lamartine.wav"),
        "--out",
        str(tmp_path / "seg"),
        env={
            "MALMOI_MODEL_DIR": str(tmp_path / "empty-store"),
            "MALMOI_OFFLINE": "1",
            "MALMOI_MODEL_PATH": "",
        },
    )
    assert proc.returncode == 1
    assert "model ina:speech-music-noise is not available" in proc.stderr
    assert "pip download --no-deps inaSpeechSegmenter==0.3.2" in proc.stderr
    assert not (tmp_path / "seg/manifest.csv").exists()
