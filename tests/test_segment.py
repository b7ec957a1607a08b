"""Segmentation with the real inaSpeechSegmenter models (from the model store) and slicing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from malmoi.config import SegmentConfig
from malmoi.manifest import read_manifest
from malmoi.media import read_audio
from segment.slicing import pad, speech_regions
from segment.stage import SegmentStage, read_segments
from separate.evaluate import speech_track
from tests.conftest import REPO, run_malmoi
from tests.media import write_wav


@pytest.fixture(scope="module")
def ina_models(shared: Path) -> Path:
    """The store with both ina models (speech/music/noise from ../shared, gender over PyPI)."""
    from malmoi.models import ModelStore, ModelUnavailable

    store = ModelStore(Path(os.environ["MALMOI_MODEL_DIR"]), search_dirs=[shared / "models"])
    try:
        store.path("ina:speech-music-noise")
        return store.path("ina:gender")
    except ModelUnavailable as exc:
        pytest.skip(f"inaSpeechSegmenter models cannot be had here: {exc}")


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
    from crawl.local import file_item

    params = SegmentConfig(min_duration=1.0, max_duration=15.0, padding=0.1)
    report = SegmentStage(params, tmp_path).run([file_item(ten_minutes)])
    assert report.processed == 1 and report.failed == 0
    rows = read_manifest(tmp_path)
    durations = np.array([sf.info(p).duration for p in rows["path"]])
    assert len(durations) > 20
    assert durations.min() >= 1.0 and durations.max() <= 15.0 + 1e-6
    # the kept speech: the padded speech regions of the segment table, less those too short
    folder = tmp_path / rows["parent_id"][0]
    regions = pad(
        speech_regions(read_segments(folder / "segments.csv"), ("male", "female"), 0.5), 0.1, 600.0
    )
    rejected = read_manifest(tmp_path, "rejected.csv")
    too_short = rejected["duration"].sum() if len(rejected) else 0.0
    kept_speech = sum(r.duration for r in regions) - too_short
    assert abs(durations.sum() - kept_speech) <= 0.01 * kept_speech
    assert (folder / "segments.TextGrid").read_text().startswith('File type = "ooTextFile"')


def test_cli_gender_filter_rerun_and_sweep(ina_models: Path, shared: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    args = [
        "segment",
        str(shared / "data/ina/lamartine.wav"),
        "--out",
        str(out),
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
    sweep = run_malmoi("sweep", str(out), "--min-duration", "0.3", "--min-duration", "5")
    assert sweep.returncode == 0, sweep.stderr
    lines = [
        ln for ln in sweep.stdout.splitlines() if ln.startswith("| 0.3") or ln.startswith("| 5 ")
    ]
    assert len(lines) == 2


def test_embedding_gender_engine(ina_models: Path, shared: Path, tmp_path: Path) -> None:
    proc = run_malmoi(
        "segment",
        str(shared / "data/ina/lamartine.wav"),
        "--out",
        str(tmp_path),
        "--gender-engine",
        "embedding",
        "--min-duration",
        "0.5",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_manifest(tmp_path)
    assert set(rows["label"]) == {"speech"}
    first, last = rows.iloc[0], rows.iloc[-1]
    assert first["gender"] == "female" and last["gender"] == "male"
    assert 0.5 <= first["gender_score"] <= 1.0


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
            "segment.train_gender",
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
    assert np.allclose(model["coef"], committed["coef"], atol=1e-2)


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
