"""Separation with the real Spleeter 2stems checkpoint (from the model store) and REPET."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from malmoi.manifest import read_manifest
from separate.evaluate import Mixture, build_mixtures, score_file, si_sdr, speech_track, to_mono
from separate.repet import RepetEngine
from separate.spleeter import SpleeterEngine
from tests.conftest import run_malmoi
from tests.media import mp4_with_audio, tone, write_wav


@pytest.fixture(scope="module")
def spleeter(spleeter_model: Path) -> SpleeterEngine:
    """The engine, loaded once for the module (as the stage loads it once per process)."""
    engine = SpleeterEngine(spleeter_model)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def music_0db(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Mixture:
    """20 s of LibriSpeech speech over MUSAN music at 0 dB, stereo 44.1 kHz."""
    folder = tmp_path_factory.mktemp("mixtures")
    return build_mixtures(shared, folder, seconds=20, snrs=(0.0,), kinds=("music",))[0]


def test_spleeter_vocals_improve_si_sdr_by_5_db(
    spleeter: SpleeterEngine, music_0db: Mixture, tmp_path: Path
) -> None:
    spleeter.separate_file(music_0db.mixture, tmp_path / "v.wav", tmp_path / "a.wav")
    vocals, mixture, _ = score_file(tmp_path / "v.wav", music_0db)
    assert vocals - mixture >= 5.0, (vocals, mixture)


def test_repet_beats_the_mixture(music_0db: Mixture, tmp_path: Path) -> None:
    RepetEngine().separate_file(music_0db.mixture, tmp_path / "v.wav", tmp_path / "a.wav")
    vocals, mixture, _ = score_file(tmp_path / "v.wav", music_0db)
    assert vocals - mixture >= 1.0, (vocals, mixture)
    # the two stems add back up to the input
    v, a = sf.read(str(tmp_path / "v.wav"))[0], sf.read(str(tmp_path / "a.wav"))[0]
    m = sf.read(str(music_0db.mixture))[0]
    assert np.max(np.abs(v + a - m)) < 1e-4


def test_chunked_matches_unchunked_on_3_minutes(
    spleeter: SpleeterEngine, shared: Path, tmp_path: Path
) -> None:
    """Chunks of 30 s (three Spleeter segments) against one pass over the whole file."""
    speech = speech_track(shared, 180.0)
    music = np.resize(sf.read(str(shared / "data/ina/musanmix.wav"))[0], len(speech)) * 0.1
    mixture = np.stack([speech + music, 0.8 * speech + 1.2 * music], axis=1)
    src = write_wav(tmp_path / "three_minutes.wav", mixture, 44100)
    spleeter.chunk_seconds = 30.0
    spleeter.separate_file(src, tmp_path / "v_chunked.wav", tmp_path / "a_chunked.wav")
    spleeter.chunk_seconds = 0.0
    try:
        spleeter.separate_file(src, tmp_path / "v_whole.wav", tmp_path / "a_whole.wav")
    finally:
        spleeter.chunk_seconds = 30.0
    for stem in ("v", "a"):
        chunked, _ = sf.read(str(tmp_path / f"{stem}_chunked.wav"))
        whole, _ = sf.read(str(tmp_path / f"{stem}_whole.wav"))
        assert chunked.shape == whole.shape == mixture.shape
        for c in range(2):
            assert si_sdr(chunked[:, c], whole[:, c]) >= 30.0


def test_our_graph_matches_spleeters_own_separator(
    spleeter: SpleeterEngine, spleeter_model: Path, music_0db: Mixture, tmp_path: Path
) -> None:
    """The streaming graph is Spleeter's model, not an approximation of it: on 20 s its output
    equals Spleeter's own Separator.separate (whole waveform, one call)."""
    from spleeter.separator import Separator

    waveform, _ = sf.read(str(music_0db.mixture), dtype="float32")
    separator = Separator("spleeter:2stems", multiprocess=False)
    separator._params["model_dir"] = str(spleeter_model)  # absolute: no download is tried
    reference = separator.separate(waveform)
    spleeter.separate_file(music_0db.mixture, tmp_path / "v.wav", tmp_path / "a.wav")
    ours, _ = sf.read(str(tmp_path / "v.wav"), dtype="float32")
    assert ours.shape == waveform.shape
    assert si_sdr(to_mono(ours), to_mono(reference["vocals"][: len(ours)])) >= 30.0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    mp4_with_audio(d / "영상 클립.mp4", seconds=4.0)
    write_wav(d / "mono_22k.wav", tone(3.3, sr=22050, channels=1, freq=300), sr=22050)
    return d


def test_cli_stems_keep_duration_and_channels_and_rerun_skips(
    spleeter_model: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sep"
    proc = run_malmoi("separate", str(inputs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "separate: 2 processed" in proc.stdout
    ingested = read_manifest(out / "ingest").set_index("id")
    rows = read_manifest(out)
    assert len(rows) == 4 and set(rows["stem"]) == {"vocals", "accompaniment"}
    for row in rows.itertuples():
        info = sf.info(row.path)
        parent = ingested.loc[row.parent_id]
        assert info.frames == round(parent["duration"] * 44100)  # to the sample
        assert info.channels == parent["channels"]
        assert Path(row.path) == (out / row.parent_id / f"{row.stem}.wav").resolve()
    mono = rows[rows["parent_id"].str.startswith("mono_22k-")]
    assert set(mono["channels"]) == {1}
    again = run_malmoi("separate", str(inputs), "--out", str(out))
    assert "separate: 0 processed, 2 skipped" in again.stdout


@pytest.mark.parametrize("codec", ["flac", "mp3", "ogg", "m4a", "wma"])
def test_codecs(codec: str, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "sep"
    proc = run_malmoi(
        "separate",
        str(inputs / "mono_22k.wav"),
        "--out",
        str(out),
        "--engine",
        "repet",
        "--codec",
        codec,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_manifest(out)
    for row in rows.itertuples():
        assert row.path.endswith(f"/{row.stem}.{codec}") and Path(row.path).is_file()
        assert not Path(row.path).with_suffix(".wav").exists()
    if codec == "flac":
        assert sf.info(rows["path"][0]).frames == round(3.3 * 44100)


def test_missing_model_is_an_error_before_any_file(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "sep"
    proc = run_malmoi(
        "separate",
        str(inputs),
        "--out",
        str(out),
        env={
            "MALMOI_MODEL_DIR": str(tmp_path / "empty-store"),
            "MALMOI_OFFLINE": "1",
            "MALMOI_MODEL_PATH": "",
        },
    )
    assert proc.returncode == 1
    assert "model spleeter:2stems is not available" in proc.stderr
    assert "malmoi models fetch spleeter:2stems --from" in proc.stderr
    assert not (out / "manifest.csv").exists()
    stem_dirs = [p.name for p in out.iterdir() if p.is_dir() and p.name != "ingest"]
    assert stem_dirs == []  # nothing separated, nothing passed through
