"""The denoise stage end to end: the CLI on files (auto-notch per input, scores before and after,
thresholds, resume), long inputs streamed equal to in-memory processing, the pydub baseline, and
``build-dataset``: changing the chain recomputes denoise only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from malmoi.config import DenoiseConfig
from malmoi.manifest import read_manifest
from malmoi.stage import Item
from tests.conftest import run_malmoi
from tests.media import korean_speech


def _speech(shared: Path, seconds: float = 6.0, sr: int = 16000) -> np.ndarray:
    import librosa

    files = sorted((shared / "data/librispeech/utterances").glob("*/*.flac"))[:3]
    audio = np.concatenate([librosa.load(str(f), sr=sr)[0] for f in files])
    return audio[: int(seconds * sr)]


@pytest.fixture(scope="module")
def noisy_files(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two speech files from ../shared, one with a 6-kHz whine, one with a 60-Hz hum."""
    folder = tmp_path_factory.mktemp("noisy")
    sr = 22050
    speech = _speech(shared, 12.0, sr)
    t = np.arange(len(speech)) / sr
    rms = float(np.sqrt(np.mean(speech**2)))
    whine = speech + rms * 0.3 * np.sin(2 * np.pi * 6000 * t)
    hum = speech + rms * 0.3 * sum(np.sin(2 * np.pi * 60 * k * t) / k for k in range(1, 4))
    sf.write(folder / "whine.wav", whine.astype(np.float32), sr, subtype="FLOAT")
    sf.write(folder / "hum.flac", hum.astype(np.float32), sr)
    return folder


def test_cli_notches_scores_and_reruns(
    noisy_files: Path, dnsmos_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dn"
    proc = run_malmoi("denoise", str(noisy_files), "--out", str(out), "--notch", "3000:20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_manifest(out).set_index("source")
    whine = rows.loc[str(noisy_files / "whine.wav")]
    auto = json.loads(whine["auto_notches_hz"])
    assert any(abs(f - 6000) <= 120 for f in auto), auto
    assert 3000.0 in json.loads(whine["notches_hz"])  # the explicit one too
    hum = rows.loc[str(noisy_files / "hum.flac")]
    assert any(abs(f - 60) <= 1.2 for f in json.loads(hum["auto_notches_hz"]))
    for _, row in rows.iterrows():
        assert row["chain"] == "notch → lowpass → normalize"
        for score in ("snr_db", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
            assert np.isfinite(row[f"{score}_before"]) and np.isfinite(row[f"{score}_after"])
        audio, sr = sf.read(row["path"])
        import pyloudnorm

        assert abs(pyloudnorm.Meter(sr).integrated_loudness(audio) + 23) < 0.5
    # the whine is gone: DNSMOS's background score rises
    assert whine["dnsmos_bak_after"] > whine["dnsmos_bak_before"]
    again = run_malmoi("denoise", str(noisy_files), "--out", str(out), "--notch", "3000:20")
    assert "0 processed, 2 skipped" in again.stdout, again.stdout
    strict = run_malmoi(
        "denoise", str(noisy_files), "--out", str(out), "--notch", "3000:20",
        "--min-snr-db", "80",
    )  # fmt: skip
    assert strict.returncode == 0
    rejected = read_manifest(out, "rejected.csv")
    assert len(rejected) == 2 and all("below 80 dB" in r for r in rejected["reason"])
    assert len(read_manifest(out)) == 0


def test_cutoff_at_nyquist_is_a_clear_failure(noisy_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "dn"
    proc = run_malmoi(
        "denoise", str(noisy_files / "whine.wav"), "--out", str(out), "--lowpass", "11025",
        "--no-scores",
    )  # fmt: skip
    assert proc.returncode == 1  # its only input failed (issue 20), with the reason
    assert "every input failed (1)" in proc.stderr and "Nyquist" in proc.stderr
    reason = read_manifest(out, "failures.csv")["reason"].iloc[0]
    assert "Nyquist" in reason and "11025" in reason


def test_pydub_engine_is_the_seeds_recipe(noisy_files: Path, tmp_path: Path) -> None:
    from denoise.pydub_engine import pydub_recipe

    out = tmp_path / "dn"
    src = noisy_files / "whine.wav"
    proc = run_malmoi("denoise", str(src), "--out", str(out), "--engine", "pydub", "--no-scores")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = read_manifest(out).iloc[0]
    assert row["chain"] == "pydub low_pass_filter ×2 → pydub normalize"
    audio, sr = sf.read(str(src), dtype="float32", always_2d=True)
    expected = pydub_recipe(audio, sr, cutoff_hz=5000, passes=2)
    got, _ = sf.read(row["path"], dtype="float32", always_2d=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_long_input_is_streamed_and_equals_in_memory_processing(
    shared: Path, tmp_path: Path
) -> None:
    """A 100-s input with 20-s blocks takes the streamed path; its output equals the in-memory
    chain's within -80 dB (filters) and the same loudness gain."""
    from denoise.stage import DenoiseStage

    sr = 16000
    speech = _speech(shared, 25.0, sr)
    t = np.arange(len(speech) * 4) / sr
    audio = np.tile(speech, 4) + 0.02 * np.sin(2 * np.pi * 6000 * t)
    src = tmp_path / "long.wav"
    sf.write(src, np.stack([audio, 0.5 * audio], axis=1).astype(np.float32), sr, subtype="FLOAT")
    item = Item(id="long", path=src, source=str(src), fingerprint="1")
    results = {}
    for name, block in (("streamed", 20.0), ("memory", 600.0)):
        params = DenoiseConfig(block_seconds=block, scores=False)
        stage = DenoiseStage(params, tmp_path / name)
        report = stage.run([item])
        assert report.processed == 1, report.failures
        row = read_manifest(tmp_path / name).iloc[0]
        results[name] = (sf.read(row["path"], dtype="float64")[0], row)
    (a, row_a), (b, row_b) = results["streamed"], results["memory"]
    assert a.shape == b.shape
    error_db = 10 * np.log10(np.sum((a - b) ** 2) / np.sum(b**2))
    assert error_db < -80, error_db
    assert abs(row_a["gain_db"] - row_b["gain_db"]) < 0.01
    assert row_a["auto_notches_hz"] == row_b["auto_notches_hz"] != "[]"


def test_changing_the_chain_recomputes_denoise_only(spleeter_model: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    parts = [
        sf.read(str(korean_speech(tmp_path / f"{i}.wav", text)))
        for i, text in enumerate(["안녕하세요.", "오늘의 방송을 시작합니다. 잘 부탁드립니다."])
    ]
    sr = parts[0][1]
    pause = np.zeros(int(1.5 * sr))
    speech = np.concatenate([pause, parts[0][0], pause, parts[1][0], pause])
    raw.mkdir()
    sf.write(raw / "speech.wav", speech, sr)
    cfg = {
        "name": "denoisechain",
        "output_dir": str(tmp_path / "out"),
        "sources": [{"kind": "local", "paths": [str(raw)]}],
        "segment": {"gender_engine": "embedding", "min_duration": 0.3},
        "denoise": {"scores": False},
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    first = run_malmoi("build", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "denoise: " in first.stdout
    cfg["denoise"]["lowpass"] = {"passes": 3}
    config.write_text(yaml.safe_dump(cfg))
    second = run_malmoi("build", str(config))
    assert second.returncode == 0, second.stderr[-3000:]
    for stage in ("ingest", "separate", "segment"):
        assert f"{stage}: 0 processed" in second.stdout, second.stdout
    segment_slices = len(read_manifest(tmp_path / "out/segment"))
    assert segment_slices >= 1
    assert f"denoise: {segment_slices} processed, 0 skipped" in second.stdout, second.stdout
    rows = read_manifest(tmp_path / "out/denoise")
    assert all(json.loads(p)["lowpass"]["passes"] == 3 for p in rows["params"])
    # fewer slices upstream: denoise keeps nothing of the slices that are gone
    slices = read_manifest(tmp_path / "out/segment")
    assert slices["duration"].nunique() >= 2, slices["duration"]
    cfg["segment"]["min_duration"] = float(slices["duration"].min()) + 0.01
    config.write_text(yaml.safe_dump(cfg))
    third = run_malmoi("build", str(config))
    assert third.returncode == 0, third.stderr[-3000:]
    fewer = read_manifest(tmp_path / "out/segment")
    assert 0 < len(fewer) < len(slices)
    denoised = read_manifest(tmp_path / "out/denoise")
    assert sorted(denoised["parent_id"]) == sorted(fewer["id"])
    files = sorted((tmp_path / "out/denoise").glob("*/*.wav"))
    assert sorted(str(f) for f in files) == sorted(denoised["path"])


def test_the_default_chain_beats_the_seeds_recipe(shared: Path, dnsmos_model: Path) -> None:
    """A small run of the evaluation (``malmoi eval denoise`` runs the README's): on crackle and
    a 6-kHz whine at 10 dB SNR, the auto notch removes the whine, and the default chain improves
    SI-SDR over the noisy input and over the seed's pydub recipe, and DNSMOS OVRL on the whole
    (on crackle alone OVRL can fall: see the README's table)."""
    from denoise.quality import Dnsmos
    from eval.denoise import CONFIGS, cases, evaluate, summary

    configs = {
        k: CONFIGS[k]
        for k in ("noisy input", "notch (auto)", "chain: notch → lowpass", "pydub recipe (seed)")
    }
    scores = evaluate(
        cases(shared, clips=1, noise_kinds=("crackle", "whine"), snrs=(10.0,), seconds=12.0),
        configs,
        dnsmos=Dnsmos.from_store(None),
    )
    data = summary(scores)
    chain, pydub, noisy = (
        data["chain: notch → lowpass"],
        data["pydub recipe (seed)"],
        data["noisy input"],
    )
    assert data["notch (auto)"]["whine"][0] > 3.0  # dB of SI-SDR: the whine was found and notched
    for kind in ("crackle", "whine"):
        assert chain[kind][0] > 2.0 and chain[kind][0] > pydub[kind][0] + 1.0, (kind, data)
    assert chain["all"][1] > noisy["all"][1], data  # DNSMOS OVRL rises on the whole


def test_a_joined_slice_or_a_part_finds_its_track(tmp_path: Path) -> None:
    """The speaker filter's joins (``<slice>+<n>``) and parts (``<slice>.1``) are children of a
    slice, not of the track: their track is the nearest ancestor in the separate stage's table,
    so notches and the low-pass cutoff are found once per track, not once per joined slice."""
    from denoise.stage import tracks_from

    sep = tmp_path / "separate"
    (sep / "ep").mkdir(parents=True)
    sf.write(sep / "ep" / "vocals.wav", np.zeros(160, np.float32), 16000)
    (sep / "manifest.csv").write_text("id,parent_id,path\nep.vocals,ep,ep/vocals.wav\n")
    track_of = tracks_from(sep)
    vocals = ("ep.vocals", (sep / "ep" / "vocals.wav").absolute())

    def item(parent: str) -> Item:
        return Item(id=f"{parent}.x", path=tmp_path / "x.wav", source="", row={"parent_id": parent})

    assert track_of(item("ep.vocals")) == vocals  # a segment slice
    assert track_of(item("ep.vocals.0016")) == vocals  # a join <slice>+<n>, a part <slice>.1
    assert track_of(item("ep.vocals.0016.1")) == vocals  # a part of a part's row
    assert track_of(item("other.vocals.0001")) is None  # not in the table: the slice itself
    assert track_of(item("")) is None
