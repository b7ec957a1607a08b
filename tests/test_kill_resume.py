"""`malmoi build` killed in the middle of a stage, then run again, ends exactly where an
uninterrupted build ends; and a killed build leaves no process behind (Prefect's temporary
server, ffmpeg). Real everything: ffmpeg-made inputs with LibriSpeech speech over MUSAN music,
Spleeter, inaSpeechSegmenter, Prefect's temporary server."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from ingest.synthetic import mux
from tests.conftest import MALMOI, child_env, run_malmoi
from tests.media import ffmpeg

pytestmark = pytest.mark.slow

STAGES = ("ingest", "separate", "segment")
TABLES = ("manifest.csv", "rejected.csv", "failures.csv", "progress.csv")
N_INPUTS = 3


def _speech_over_music(dest: Path, utterances: list[Path], music: Path, offset: float) -> Path:
    """44.1 kHz stereo WAV: ``utterances`` one after the other, music 12 dB under them."""
    inputs = [a for u in utterances for a in ("-i", str(u))]
    n = len(utterances)
    fmt = "aresample=44100,aformat=sample_fmts=fltp:channel_layouts=stereo"
    graph = (
        "".join(f"[{i}]" for i in range(n))
        + f"concat=n={n}:v=0:a=1,{fmt}[s];"
        + f"[{n}]volume=-12dB,{fmt}[m];[s][m]amix=inputs=2:duration=first:normalize=0"
    )
    ffmpeg(*inputs, "-ss", f"{offset}", "-i", str(music), "-filter_complex", graph, str(dest))
    return dest


def _seconds(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


@pytest.fixture(scope="module")
def inputs(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 10-20 s inputs (one mp4 with video, two WAVs), each a different LibriSpeech
    speaker over a different stretch of MUSAN music."""
    raw = tmp_path_factory.mktemp("kill-raw")
    work = tmp_path_factory.mktemp("kill-work")
    music = shared / "data/ina/musanmix.wav"  # 0-22.48 s is music only
    speakers = sorted((shared / "data/librispeech/utterances").iterdir())[:N_INPUTS]
    for i, speaker in enumerate(speakers):
        chosen: list[Path] = []
        total = 0.0
        for utt in sorted(speaker.glob("*.flac")):
            length = _seconds(utt)
            if total + length <= 18.0:
                chosen.append(utt)
                total += length
            if total >= 10.0:
                break
        assert 10.0 <= total <= 18.0, (speaker, total)
        if i == 0:
            wav = _speech_over_music(work / "speech0.wav", chosen, music, offset=0.0)
            mux(raw / "영상 0.mp4", _seconds(wav), wav)
        else:
            _speech_over_music(raw / f"speech {i}.wav", chosen, music, offset=2.0 * i)
    return raw


def _config(raw: Path, out: Path) -> Path:
    cfg = {
        "name": "killtest",
        "output_dir": str(out),
        "sources": [{"kind": "local", "paths": [str(raw)]}],
        "separate": {"engine": "spleeter", "codec": "wav"},
        "segment": {"gender": "any", "gender_engine": "embedding"},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def _env(shared: Path) -> dict[str, str]:
    return child_env({"MALMOI_MODEL_PATH": str(shared / "models")})


@pytest.fixture(scope="module")
def reference(
    inputs: Path, shared: Path, spleeter_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Output A: one uninterrupted build."""
    out = tmp_path_factory.mktemp("kill-a") / "out"
    proc = run_malmoi("build", str(_config(inputs, out)), env=_env(shared), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in STAGES:
        assert len(_rows(out / stage / "progress.csv")) == N_INPUTS, stage
    assert _rows(out / "segment/manifest.csv"), "segment found no speech: the test means little"
    return out


# --- processes ---------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, found, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie, already dead but not reaped by its new parent, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _assert_no_survivors(pids: list[int], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    survivors = {p: _cmdline(p)[:200] for p in pids if _alive(p)}
    for p in survivors:  # clean up after a failure, then report it
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    assert not survivors, f"still running after the build was killed: {survivors}"


def _start(config: Path, shared: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*MALMOI, "build", str(config)],
        env=_env(shared),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_until(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path, seconds: float = 600
) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the build ended before the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no kill point in {seconds} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _midway(stage_dir: Path) -> Callable[[], bool]:
    """True once the stage finished at least one input and not all of them."""
    return lambda: 1 <= len(_rows(stage_dir / "progress.csv")) < N_INPUTS


def _kill_midway(
    config: Path, shared: Path, stage: str, sig: signal.Signals, log: Path
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Start a build, send ``sig`` to the malmoi process alone (not its group) once ``stage``
    is mid-way; return the process (not yet waited for) and its descendants at that moment."""
    out = Path(yaml.safe_load(config.read_text())["output_dir"])
    proc = _start(config, shared, log)
    _wait_until(proc, _midway(out / stage), log)
    family = {p: _cmdline(p) for p in _descendants(proc.pid)}
    proc.send_signal(sig)
    assert any("uvicorn" in cmd for cmd in family.values()), (
        "Prefect's temporary server is not a descendant of the build: nothing was tested",
        family,
    )
    return proc, list(family)


# --- outputs ----------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _is_temp(path: Path, root: Path) -> bool:
    """A temporary file or folder of an atomic write, or anything inside one."""
    names = path.relative_to(root).parts
    return any(".malmoi-tmp" in n or n.startswith(".tmp") or ".tmp" in n for n in names)


def _debris(out: Path) -> list[str]:
    """Temporary files or folders of atomic writes left anywhere under ``out``."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if _is_temp(p, out))


def _digest(path: Path, out: Path) -> str:
    """sha256 of a file; of a WAV, of its format and samples: libsndfile stamps float WAVs with
    the time of writing (PEAK chunk), so equal audio written twice differs in one header byte;
    of the dataset card and dataset.json, with the build's own folder (in the resolved config
    they quote) written as <out>."""
    if path.suffix in (".md", ".json"):
        text = path.read_text(encoding="utf-8")
        for folder in {str(out.resolve()), str(out)}:
            text = text.replace(folder, "<out>")
        return hashlib.sha256(text.encode()).hexdigest()
    if path.suffix != ".wav":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    audio, sr = sf.read(str(path), dtype="float64", always_2d=True)
    info = sf.info(str(path))
    head = f"{sr} {info.channels} {info.subtype} {audio.shape}".encode()
    return hashlib.sha256(head + audio.tobytes()).hexdigest()


def _files(out: Path) -> dict[str, str]:
    """Digest of every stage output except the tables and config (compared separately)."""
    return {
        str(p.relative_to(out)): _digest(p, out)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix != ".yaml" and p.name not in TABLES and not _is_temp(p, out)
    }


def _assert_same_dataset(out: Path, reference: Path) -> None:
    for stage in STAGES:
        for table in TABLES:
            got, want = _rows(out / stage / table), _rows(reference / stage / table)
            assert got == want, f"{stage}/{table} differs from the uninterrupted build"
    got, want = _files(out), _files(reference)
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert differ == [], f"files differ from the uninterrupted build: {differ}"
    assert _debris(out) == []


# --- tests ------------------------------------------------------------------------------------


def _sigkill_midway(config: Path, shared: Path, stage: str, log: Path) -> int:
    """SIGKILL a build mid-``stage``; check nothing survives it; return the inputs done."""
    proc, family = _kill_midway(config, shared, stage, signal.SIGKILL, log)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    _assert_no_survivors(family)
    out = Path(yaml.safe_load(config.read_text())["output_dir"])
    done = len(_rows(out / stage / "progress.csv"))
    assert 1 <= done < N_INPUTS, f"killed after {done} of {N_INPUTS} inputs: not mid-way"
    return done


def test_sigkill_mid_separate_then_mid_segment_then_resume_matches(
    inputs: Path, shared: Path, reference: Path, tmp_path: Path
) -> None:
    """Killed (SIGKILL, the malmoi process alone) while separating, then again, resumed, while
    segmenting: no process outlives either kill, and the third run ends with the uninterrupted
    build's tables and audio. (One output for both kill points keeps the test to 4 builds.)"""
    config = _config(inputs, tmp_path / "out")
    separated = _sigkill_midway(config, shared, "separate", tmp_path / "kill-1.log")

    segmented = _sigkill_midway(config, shared, "segment", tmp_path / "kill-2.log")
    log = (tmp_path / "kill-2.log").read_text()
    assert f"separate: {N_INPUTS - separated} processed, {separated} skipped" in log

    rerun = run_malmoi("build", str(config), env=_env(shared), timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"separate: 0 processed, {N_INPUTS} skipped" in rerun.stdout
    assert f"segment: {N_INPUTS - segmented} processed, {segmented} skipped" in rerun.stdout
    _assert_same_dataset(tmp_path / "out", reference)


def test_sigterm_mid_separate_stops_cleanly(
    inputs: Path, shared: Path, spleeter_model: Path, tmp_path: Path
) -> None:
    """SIGTERM: the build stops within 30 s with status 143, Prefect records the run as
    crashed and stops its server, and no temporary file is left even before any rerun."""
    config = _config(inputs, tmp_path / "out")
    log = tmp_path / "terminated.log"
    proc, family = _kill_midway(config, shared, "separate", signal.SIGTERM, log)
    started = time.monotonic()
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 30 s after SIGTERM:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert "Crashed" in text, text[-3000:]
    _assert_no_survivors(family)
    assert _debris(tmp_path / "out") == []
    print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
