"""The export stage on its own (no model, no ../shared): splits by source, limits, the audio it
writes (mono, 16-bit, resampled, never clipping), resume, and a new seed that rewrites the
metadata without writing any audio again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from export.stage import ExportStage, assign_splits
from malmoi.config import ExportConfig, SplitsConfig

SHARES = {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_splits_are_by_source_stable_and_near_the_shares() -> None:
    ids = {f"episode-{i:04d}" for i in range(2000)}
    a = assign_splits(ids, 0, SHARES)
    assert assign_splits(ids, 0, SHARES) == a  # deterministic
    counts = {s: sum(v == s for v in a.values()) / len(ids) for s in SHARES}
    for s, share in SHARES.items():
        assert abs(counts[s] - share) < 0.03, counts
    more = assign_splits(ids | {f"new-{i}" for i in range(500)}, 0, SHARES)
    assert all(more[s] == a[s] for s in ids)  # adding sources never moves one
    assert assign_splits(ids, 1, SHARES) != a  # the seed matters
    assert assign_splits({"only-one"}, 5, SHARES) == {"only-one": "train"}


def test_split_shares_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="must be 1"):
        SplitsConfig(train=0.8, validation=0.3, test=0.1)


def write(path: Path, seconds: float, sr: int, channels: int, peak: float) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    wave = np.sin(2 * np.pi * 220 * t) * peak
    sf.write(str(path), np.stack([wave] * channels, axis=1).astype(np.float32), sr, "FLOAT")
    return path


@pytest.fixture()
def slices(tmp_path: Path) -> Path:
    folder = tmp_path / "slices"
    folder.mkdir()
    write(folder / "a.wav", 2.0, 44100, 2, 1.5)  # over full scale (float WAV)
    write(folder / "b.wav", 3.0, 16000, 1, 0.5)
    write(folder / "c.wav", 0.4, 44100, 1, 0.5)  # under min_duration
    return folder


def items(folder: Path):
    from ingest.local import discover

    return list(discover([folder], ["wav"]))


def test_export_writes_mono_16_bit_audio_resumes_and_reseeds(slices: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    params = ExportConfig(sample_rate=22050, min_duration=1.0, text="none")
    report = ExportStage(params, out).run(items(slices))
    assert report.processed == 3 and report.kept == 2 and report.rejected == 1
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    for r in rows:
        info = sf.info(str(out / r["audio_filepath"]))
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
        assert abs(info.frames / info.samplerate - r["duration"]) < 1e-9
        wav, _ = sf.read(str(out / r["audio_filepath"]))
        assert np.max(np.abs(wav)) <= 0.991  # the 1.5 peak scaled under full scale
    assert abs(rows[1]["duration"] - 3.0) < 1e-3  # resampled 16 kHz -> 22.05 kHz, same length
    rejected = (out / "rejected.csv").read_text()
    assert "under min_duration 1" in rejected
    info = json.loads((out / "dataset.json").read_text())
    assert info["counts"]["slices"] == 2 and info["sample_rate"] == 22050
    # resume: nothing to do; a new seed rewrites the metadata only
    again = ExportStage(params, out)
    assert again.pending(items(slices)) == 0
    assert again.run(items(slices)).processed == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "wavs").glob("*.wav")}
    reseeded = ExportStage(params.model_copy(update={"seed": 9}), out)
    assert reseeded.pending(items(slices)) == 1  # the metadata are stale
    assert reseeded.run(items(slices)).processed == 0
    assert json.loads((out / "dataset.json").read_text())["seed"] == 9
    assert {p.name: p.stat().st_mtime_ns for p in (out / "wavs").glob("*.wav")} == stamps


def test_cli_exports_any_stage_folder_and_verify_accepts_it(slices: Path, tmp_path: Path) -> None:
    from tests.conftest import run_malmoi

    ingest = tmp_path / "ingest"
    assert run_malmoi("ingest", str(slices), "--out", str(ingest)).returncode == 0
    dataset = tmp_path / "ds"
    proc = run_malmoi("export", str(ingest), "--out", str(dataset), "--sample-rate", "16000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "export: 3 processed" in proc.stdout
    rows = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["source_offset"] is None for r in rows)
    assert {sf.info(str(dataset / r["audio_filepath"])).samplerate for r in rows} == {16000}
    ok = run_malmoi("verify", str(dataset))
    assert ok.returncode == 0, ok.stderr
    assert run_malmoi("export", str(tmp_path / "nothing")).returncode == 2


def test_provenance_names_every_model_of_the_build_with_its_sha256() -> None:
    from export.provenance import models_used
    from malmoi.config import load_config
    from malmoi.models import REGISTRY
    from tests.conftest import REPO

    cfg = load_config(REPO / "configs" / "demo.yaml")
    used = {(m["name"], m["file"]): m["sha256"] for m in models_used(cfg)}
    spleeter = REGISTRY["spleeter:2stems"].files[0]
    assert used[("spleeter:2stems", spleeter.name)] == spleeter.sha256
    assert ("ina:gender", "keras_male_female_cnn.hdf5") not in used  # the demo's gender engine
    assert len(used[("resemblyzer:encoder", "pretrained.pt")]) == 64  # inside the wheel
    assert ("speaker filter cohort", "cohort_embeddings.npy") in used
    assert ("dnsmos:p835", "sig_bak_ovr.onnx") in used


def test_a_broken_subtitle_file_costs_the_text_not_the_audio(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from malmoi.stage import Item

    media = write(tmp_path / "episode.wav", 3.0, 16000, 1, 0.5)
    (tmp_path / "episode.ko.vtt").write_text("not a subtitle file\n", encoding="utf-8")
    good = tmp_path / "other.wav"
    write(good, 3.0, 16000, 1, 0.4)  # not the same audio: that would be a duplicate
    (tmp_path / "other.ko.vtt").write_text(
        "WEBVTT\n\n00:00:00.500 --> 00:00:01.500\n안녕하세요\n", encoding="utf-8"
    )
    items = [
        Item(p.stem + ".s1", p, str(p), "k" + p.stem, {"id": p.stem + ".s1", "source": str(p),
             "start": 0.0, "stop": 3.0})
        for p in (media, good)
    ]  # fmt: skip
    out = tmp_path / "ds"
    report = ExportStage(ExportConfig(sample_rate=16000), out).run(items)
    assert report.kept == 2 and report.failed == 0
    rows = {json.loads(x)["id"]: json.loads(x) for x in (out / "manifest.jsonl").open()}
    assert rows["episode.s1"]["text"] == "" and rows["other.s1"]["text"] == "안녕하세요"
    assert "episode.ko.vtt" in caplog.text and "without text" in caplog.text


def test_a_pipe_in_a_text_keeps_the_three_metadata_files_in_agreement(tmp_path: Path) -> None:
    """A '|' stays in manifest.jsonl's text; metadata.txt, which LJSpeech loaders split on
    '|', holds it as a space (export.layout.ljspeech_field), and verify accepts that."""
    import csv

    from export.verify import verify
    from malmoi.stage import Item

    media = write(tmp_path / "show.wav", 2.0, 16000, 1, 0.5)
    (tmp_path / "show.ko.vtt").write_text(
        "WEBVTT\n\n00:00:00.200 --> 00:00:01.800\n예 | 아니오\n", encoding="utf-8"
    )
    row = {"id": "show.s1", "source": str(media), "start": 0.0, "stop": 2.0}
    out = tmp_path / "ds"
    ExportStage(ExportConfig(sample_rate=16000), out).run([Item("show.s1", media, str(media),
                                                                "k", row)])  # fmt: skip
    assert json.loads((out / "manifest.jsonl").read_text())["text"] == "예 | 아니오"
    assert (out / "metadata.txt").read_text(encoding="utf-8") == "show.s1|예 아니오|예 아니오\n"
    with (out / "metadata.txt").open(encoding="utf-8", newline="") as fh:  # as a loader reads it
        assert list(csv.reader(fh, delimiter="|", quoting=csv.QUOTE_NONE)) == [
            ["show.s1", "예 아니오", "예 아니오"]
        ]
    assert verify(out) == []
