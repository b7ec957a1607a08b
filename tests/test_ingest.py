"""Ingest with real ffmpeg on media the tests make (and ../shared where it helps)."""

import hashlib
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
import soundfile as sf

from ingest.local import discover
from ingest.stage import IngestStage
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
    assert (again.processed, again.skipped, again.failed, again.failed_before) == (0, 4, 3, 3)
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
    # the bad input still counts as failed, with where to look
    assert "0 processed, 1 skipped (done before), 1 failed (1 in an earlier run" in again.stdout
    assert f"failures: {out / 'failures.csv'}" in again.stdout


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


def test_nfc_and_nfd_twins_in_one_folder_are_two_rows(media: Path, tmp_path: Path) -> None:
    """Linux keeps `안녕.wav` (NFC) and `안녕.wav` (NFD) side by side: two inputs, two rows
    (hashing the NFC form gave them one id, and one was silently dropped)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for form in ("NFC", "NFD"):
        shutil.copy(media / "mono.wav", raw / unicodedata.normalize(form, "안녕.wav"))
    assert len(list(raw.iterdir())) == 2
    report = IngestStage(IngestConfig(), tmp_path / "out").run(discover([raw], ["wav"]))
    assert (report.processed, report.failed) == (2, 0)
    rows = read_manifest(tmp_path / "out")
    assert len(rows) == 2 and len(set(rows["id"])) == 2 and len(set(rows["source"])) == 2


def test_an_id_collision_is_an_error_naming_both_files(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.local
    from malmoi.errors import IdCollision

    monkeypatch.setattr(ingest.local, "root_id", lambda name, source: "audio-00000000")
    files = [media / "mono.wav", media / "song.flac"]
    with pytest.raises(IdCollision) as exc:
        IngestStage(IngestConfig(), tmp_path).run(discover(files, []))
    assert str(files[0]) in str(exc.value) and str(files[1]) in str(exc.value)
    assert not (tmp_path / "manifest.csv").exists()


def test_fingerprint_decodes_only_new_and_changed_files(media: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(media, raw, ignore=shutil.ignore_patterns("*.mkv", "*.m4a", "corrupt*"))
    out = tmp_path / "out"
    first = IngestStage(IngestConfig(), out).run(discover([raw], IngestConfig().extensions))
    assert first.processed == 4
    shutil.copy(media / "mono.wav", raw / "new.wav")
    added = IngestStage(IngestConfig(), out).run(discover([raw], IngestConfig().extensions))
    assert (added.processed, added.skipped) == (1, 4)
    write_wav(raw / "mono.wav", tone(1.0, sr=22050, channels=1), sr=22050)  # edited in place
    edited = IngestStage(IngestConfig(), out).run(discover([raw], IngestConfig().extensions))
    assert (edited.processed, edited.skipped) == (1, 4)
    row = read_manifest(out).set_index("source").loc[str((raw / "mono.wav").absolute())]
    assert abs(row["duration"] - 1.0) < 0.001


def test_outputs_are_synced_before_their_progress_row(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import malmoi.files

    synced: list[str] = []
    real = malmoi.files.sync
    monkeypatch.setattr(malmoi.files, "sync", lambda p: (synced.append(p.name), real(p)))
    IngestStage(IngestConfig(), tmp_path).run(discover([media / "mono.wav"], []))
    row = read_manifest(tmp_path).iloc[0]
    assert any(name.startswith(f".{Path(row['path']).name}.") for name in synced), synced


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MB file system (tmpfs) to fill up; needs the right to mount (root, as here and in
    CI); elsewhere that resource is absent."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_stops_ingest_and_the_rerun_takes_the_input(
    small_disk: Path, tmp_path: Path
) -> None:
    """A real ENOSPC while ffmpeg writes: not the input's fault — the stage stops with the
    reason, nothing is recorded as failed, no temporary file is left; with space again, the
    next run decodes it (before: "failed" for good, reported as a bad input)."""
    src = write_wav(tmp_path / "long.wav", tone(20.0, sr=44100, channels=2))  # 3.5 MB as WAV
    out = small_disk / "ingest"
    proc = run_malmoi("ingest", str(src), "--out", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"ingest stopped at {src}: ffmpeg:" in proc.stderr
    assert "No space left on device" in proc.stderr
    assert "the machine, not the input, is at fault" in proc.stderr
    assert len(read_manifest(out, "failures.csv")) == 0
    assert [p.name for p in (out / "audio").iterdir()] == []  # no temporary debris
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    again = run_malmoi("ingest", str(src), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "1 processed" in again.stdout and "0 failed" in again.stdout


def test_ffmpeg_that_hangs_is_killed_after_its_timeout(media: Path, tmp_path: Path) -> None:
    """`-re` makes ffmpeg read at real-time speed: a stand-in for an input that stalls it."""
    import time

    from malmoi.tools import MediaError, run_ffmpeg

    src = write_wav(tmp_path / "ten_seconds_7f3a.wav", tone(10.0))
    started = time.monotonic()
    with pytest.raises(MediaError, match="did not finish within 1 s"):
        run_ffmpeg(["-re", "-i", str(src), "-f", "null", "-"], "x", timeout=1.0)
    assert time.monotonic() - started < 5
    assert _processes_mentioning("ten_seconds_7f3a") == []


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids


KILLED_PARENT = """
import sys
from pathlib import Path
from malmoi.tools import run_ffmpeg
run_ffmpeg(["-re", "-i", sys.argv[1], "-f", "null", "-"], "x")
"""


def test_ffmpeg_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """SIGKILL the malmoi process mid-decode: its ffmpeg child goes with it (no orphan)."""
    import os
    import signal
    import sys
    import time

    from tests.conftest import REPO

    src = write_wav(tmp_path / "thirty_seconds_9c1e.wav", tone(30.0))
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(src)], cwd=REPO)
    deadline = time.monotonic() + 30
    while not [p for p in _processes_mentioning("thirty_seconds_9c1e") if p != parent.pid]:
        assert time.monotonic() < deadline, "ffmpeg never started"
        time.sleep(0.1)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while _processes_mentioning("thirty_seconds_9c1e"):
        assert time.monotonic() < deadline, "ffmpeg outlived the process that started it"
        time.sleep(0.1)


def test_ffmpeg_killed_by_a_signal_stops_ingest_and_the_rerun_takes_the_input(
    tmp_path: Path,
) -> None:
    """The out-of-memory killer's SIGKILL to a real ffmpeg mid-decode: the machine, not the
    input, is at fault — the stage stops with the reason (exit 1), nothing is recorded as
    failed, no temporary file is left, and the next run decodes the input. (``ffmpeg`` on PATH
    is the real one run with ``-re``, so the decode lasts long enough to be killed.)"""
    import os
    import signal
    import sys
    import time

    from tests.conftest import REPO, child_env

    real = shutil.which("ffmpeg")
    assert real
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "ffmpeg").write_text(f'#!/bin/sh\nexec "{real}" -re "$@"\n')
    (slow / "ffmpeg").chmod(0o755)
    src = write_wav(tmp_path / "twenty_seconds_5d2b.wav", tone(20.0))
    out = tmp_path / "ingest"
    env = child_env({"PATH": f"{slow}{os.pathsep}{os.environ['PATH']}"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "malmoi", "ingest", str(src), "--out", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        tools = [
            pid
            for pid in _processes_mentioning("twenty_seconds_5d2b")
            if Path(f"/proc/{pid}/exe").resolve() == Path(real).resolve()
        ]
        if tools:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "ffmpeg never started"
        time.sleep(0.05)
    os.kill(tools[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stdout + stderr
    assert f"ingest stopped at {src}: ffmpeg was killed by signal 9" in stderr, stderr
    assert "the machine, not the input, is at fault" in stderr, stderr
    assert len(read_manifest(out, "failures.csv")) == 0
    assert len(read_manifest(out)) == 0
    assert [p.name for p in (out / "audio").iterdir()] == []  # no temporary debris
    again = run_malmoi("ingest", str(src), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "1 processed" in again.stdout and "0 failed" in again.stdout
