"""Ingest with real ffmpeg on media the tests make (and ../shared where it helps)."""

import hashlib
import shutil
import unicodedata
from pathlib import Path

import pytest
import soundfile as sf

from crawl.ingest import IngestStage
from crawl.local import discover
from malmoi.config import IngestConfig
from malmoi.manifest import read_manifest
from tests.conftest import run_malmoi
from tests.media import encode, mp4_with_audio, tone, video_only, write_wav


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of good and bad inputs."""
    d = tmp_path_factory.mktemp("raw")
    mp4_with_audio(d / "한국어 방송 1회.mp4", seconds=5.0)
    write_wav(d / "mono.wav", tone(2.0, sr=22050, channels=1), sr=22050)
    encode(write_wav(d / "tmp.wav", tone(3.0, sr=48000), sr=48000), d / "song.flac")
    encode(d / "song.flac", d / "song.mp3", "-b:a", "128k")
    (d / "tmp.wav").unlink()
    (d / "corrupt.mp3").write_bytes(b"ID3\x03\x00 this is not really an mp3" * 50)
    (d / "empty.m4a").write_bytes(b"")
    video_only(d / "silent_film.mkv")
    (d / "notes.txt").write_text("not media")  # not picked up from the folder
    return d


def test_mp4_with_hangul_name_gives_wav_with_exact_duration(media: Path, tmp_path: Path) -> None:
    src = media / "한국어 방송 1회.mp4"
    before = _sha(src)
    report = IngestStage(IngestConfig(), tmp_path).run(discover([src], []))
    assert report.processed == 1 and report.failed == 0
    row = read_manifest(tmp_path).iloc[0]
    assert row["id"].startswith("한국어_방송_1회-")
    wav = Path(row["path"])
    assert wav.is_file() and wav.suffix == ".wav"
    info = sf.info(str(wav))
    assert info.samplerate == 44100 and info.channels == 2
    assert abs(info.frames / info.samplerate - 5.0) <= 0.010
    assert abs(row["duration"] - 5.0) <= 0.010
    assert row["has_video"] and row["source_codec"] == "aac"
    assert row["source"] == str(src.absolute())
    assert _sha(src) == before  # raw input untouched


def test_folder_batch_records_failures_and_goes_on(media: Path, tmp_path: Path) -> None:
    items = list(discover([media], IngestConfig().extensions))
    assert not any(i.path.name == "notes.txt" for i in items)
    report = IngestStage(IngestConfig(), tmp_path).run(items)
    assert report.processed == 4 and report.failed == 3
    kept = read_manifest(tmp_path)
    assert len(kept) == 4
    mono = kept[kept["id"].str.startswith("mono-")].iloc[0]
    assert mono["channels"] == 1 and mono["sample_rate"] == 44100
    assert abs(mono["duration"] - 2.0) < 0.001
    fails = read_manifest(tmp_path, "failures.csv")
    reasons = {Path(p).name: r for p, r in zip(fails["input"], fails["reason"], strict=True)}
    assert reasons["empty.m4a"] == "empty file (0 bytes)"
    assert reasons["corrupt.mp3"].startswith("not a readable media file")
    assert reasons["silent_film.mkv"] == "no audio stream (streams: video)"
    assert all("\n" not in r for r in reasons.values())


def test_rerun_processes_nothing_and_changed_params_recompute(media: Path, tmp_path: Path) -> None:
    items = list(discover([media], IngestConfig().extensions))
    IngestStage(IngestConfig(), tmp_path).run(items)
    again = IngestStage(IngestConfig(), tmp_path).run(items)
    assert (again.processed, again.failed, again.skipped) == (0, 0, 7)
    resampled = IngestStage(IngestConfig(sample_rate=16000, channels="mono"), tmp_path).run(items)
    # new parameters: every input is tried again, the bad ones fail again
    assert (resampled.processed, resampled.failed, resampled.skipped) == (4, 3, 0)
    df = read_manifest(tmp_path)
    assert set(df["sample_rate"]) == {16000} and set(df["channels"]) == {1}


def test_nfd_file_name_is_normalised(tmp_path: Path, media: Path) -> None:
    nfd = unicodedata.normalize("NFD", "뉴스 클립.mp3")
    shutil.copy(media / "song.mp3", tmp_path / nfd)
    IngestStage(IngestConfig(), tmp_path / "out").run(discover([tmp_path], ["mp3"]))
    row = read_manifest(tmp_path / "out").iloc[0]
    assert row["id"] == unicodedata.normalize("NFC", row["id"])
    assert row["id"].startswith("뉴스_클립-")


def test_cli_exit_code_zero_with_failure_reason_printed(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_malmoi(
        "ingest", str(media / "한국어 방송 1회.mp4"), str(media / "corrupt.mp3"), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert f"FAILED {media / 'corrupt.mp3'}: not a readable media file" in proc.stderr
    assert "1 processed, 0 skipped (done before), 1 failed" in proc.stdout
    assert len(read_manifest(out)) == 1 and len(read_manifest(out, "failures.csv")) == 1
    again = run_malmoi(
        "ingest", str(media / "한국어 방송 1회.mp4"), str(media / "corrupt.mp3"), "--out", str(out)
    )
    assert "0 processed, 2 skipped" in again.stdout


def test_shared_edge_cases(shared: Path, tmp_path: Path) -> None:
    files = [
        shared / "data/ina/0021.mp3",
        shared / "data/ina/silence2sec.wav",
        shared / "data/music/audio_example.mp3",
    ]
    report = IngestStage(IngestConfig(), tmp_path).run(discover(files, []))
    assert report.failed == 0 and report.processed == 3
    df = read_manifest(tmp_path).set_index("source")
    assert abs(df.loc[str(files[1]), "duration"] - 2.0) < 0.01
