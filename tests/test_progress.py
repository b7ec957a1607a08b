"""Progress of a stage run: the hook's calls, the report's audio hours and RTF, and the CLI's
bar on a real pseudo-terminal (log lines when stderr is not one)."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from ingest.local import discover
from ingest.stage import IngestStage
from malmoi.config import IngestConfig
from malmoi.progress import describe, eta, progress_for
from malmoi.stage import Item, StageProgress
from tests import test_stage
from tests.conftest import MALMOI, child_env, run_malmoi
from tests.media import tone, write_wav
from tests.test_stage import CopyStage, Params, _items

BAR = "━"  # rich's bar
inputs = test_stage.inputs  # the fixture of CopyStage's inputs, shared


def _with_durations(items: list[Item], seconds: dict[str, float]) -> list[Item]:
    """Items as :func:`items_from` makes them: with the previous stage's row (its duration)."""
    return [
        Item(i.id, i.path, i.source, i.fingerprint, row={"duration": str(seconds[i.id])})
        for i in items
    ]


def test_the_hook_is_called_at_start_and_after_every_item(inputs: Path, tmp_path: Path) -> None:
    seconds = {"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0}
    items = _with_durations(_items(inputs), seconds)
    calls: list[StageProgress] = []
    CopyStage(Params(), tmp_path / "out").run(items, progress=calls.append)
    assert len(calls) == 1 + 4
    assert [(c.item_id, c.status) for c in calls] == [
        (None, None),
        ("a", "processed"),
        ("b", "processed"),
        ("c", "failed"),
        ("d", "failed"),
    ]
    assert [c.done for c in calls] == [0, 1, 2, 3, 4]
    assert {(c.stage, c.total, c.audio_total) for c in calls} == {("copy", 4, 100.0)}
    assert [c.audio_done for c in calls] == [0.0, 10.0, 30.0, 60.0, 100.0]
    elapsed = [c.elapsed for c in calls]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    # a rerun: the finished ones are skipped, the bad input stands, the error is retried
    calls.clear()
    CopyStage(Params(), tmp_path / "out").run(items, progress=calls.append)
    assert [c.status for c in calls] == [None, "skipped", "skipped", "failed", "failed"]
    assert [c.done for c in calls] == [0, 1, 2, 3, 4]
    assert calls[-1].audio_done == 100.0 and calls[-1].fraction == 1.0


def test_raw_inputs_have_no_audio_total_and_count_their_decoded_length(
    inputs: Path, tmp_path: Path
) -> None:
    """Without a previous stage's row (ingest) the total is unknown; an item's audio is that
    of its rows, kept and rejected (CopyStage: one second per character), also when skipped
    in a rerun."""
    (inputs / "d.in").unlink()
    for _ in range(2):
        calls: list[StageProgress] = []
        stage = CopyStage(Params(min_len=3), tmp_path / "out")  # b's row is rejected
        stage.run(_items(inputs), progress=calls.append)
        assert {c.audio_total for c in calls} == {None}
        assert [c.audio_done for c in calls] == [0.0, 4.0, 6.0, 6.0]


class SlowSetup(CopyStage):
    def setup(self) -> None:
        time.sleep(0.5)


def test_report_counts_reasons_hours_and_rtf(inputs: Path, tmp_path: Path) -> None:
    seconds = {"a": 36.0, "b": 72.0, "c": 360.0, "d": 720.0}
    items = _with_durations(_items(inputs), seconds)
    out = tmp_path / "out"
    report = SlowSetup(Params(min_len=3, delay=0.2), out).run(items)
    assert (report.items, report.processed, report.failed) == (4, 2, 2)
    assert report.rejected_by_reason == {"shorter than 3": 1}  # b
    assert report.hours_in == pytest.approx((36 + 72) / 3600)  # a and b, not the failed ones
    assert report.hours_out == pytest.approx(4 / 3600)  # a's row: 4 s
    # two items of 0.2 s each in process() over 108 s of audio; neither setup (0.5 s) nor the
    # two failed items (0.2 s each) counted. Bounds a loaded machine keeps: every sleep lasts
    # at least its time, and the processed items' time fits in the run's time less those.
    assert report.seconds >= 0.5 + 4 * 0.2
    assert 0.4 <= report.rtf * 108 <= report.seconds - 0.5 - 2 * 0.2, (report.rtf, report)
    assert json.loads(json.dumps(asdict(report)))["rejected_by_reason"] == {"shorter than 3": 1}
    assert "0.030 h of audio in, 0.001 h kept, RTF 0.00" in report.summary()
    assert "nothing to do" not in report.summary()

    (inputs / "c.in").unlink()
    (inputs / "d.in").unlink()
    items = _with_durations(_items(inputs), seconds)
    report = CopyStage(Params(min_len=3, delay=0.2), out).run(items)
    assert (report.items, report.processed, report.skipped) == (2, 0, 2)
    assert (report.hours_in, report.hours_out, report.rtf, report.rejected_by_reason) == (
        0.0,
        0.0,
        0.0,
        {},
    )
    summary = report.summary()
    assert "0 processed, 2 skipped (done before), 0 failed" in summary
    assert summary.endswith("— nothing to do")
    assert (
        CopyStage(Params(), tmp_path / "empty")
        .run([])
        .summary()
        .endswith("— nothing to do (no inputs)")
    )


class SlowPrepare(CopyStage):
    """Does its work in prepare() (as the speaker filter embeds there); process() only copies."""

    def prepare(self, items: list[Item]) -> None:
        time.sleep(0.5)


def test_rtf_counts_the_work_done_in_prepare(inputs: Path, tmp_path: Path) -> None:
    items = _with_durations(_items(inputs), {"a": 36.0, "b": 72.0, "c": 360.0, "d": 720.0})
    report = SlowPrepare(Params(min_len=3), tmp_path / "out").run(items)
    assert report.processed == 2
    # 0.5 s of prepare over the processed inputs' 108 s (the failed ones' audio not counted)
    assert 0.5 <= report.rtf * 108 <= report.seconds, (report.rtf, report)
    assert "RTF 0.000" not in report.summary()


def _wavs(folder: Path) -> dict[str, float]:
    lengths = {"one": 1.5, "two": 2.25}
    for name, s in lengths.items():
        write_wav(folder / f"{name}.wav", tone(s, 16000, 1), 16000)
    return lengths


def test_a_real_ingest_reports_the_hours_of_its_wavs(tmp_path: Path) -> None:
    lengths = _wavs(tmp_path / "in")
    total = sum(lengths.values())
    params = IngestConfig()
    calls: list[StageProgress] = []
    stage = IngestStage(params, tmp_path / "out")
    report = stage.run(discover([tmp_path / "in"], params.extensions), progress=calls.append)
    assert report.processed == 2
    assert report.hours_in * 3600 == pytest.approx(total, abs=1e-3)
    assert report.hours_out * 3600 == pytest.approx(total, abs=1e-3)
    assert 0 < report.rtf < 10
    assert calls[-1].audio_total is None
    assert calls[-1].audio_done == pytest.approx(total, abs=1e-3)
    calls.clear()
    again = IngestStage(params, tmp_path / "out").run(
        discover([tmp_path / "in"], params.extensions), progress=calls.append
    )
    assert (again.skipped, again.hours_in, again.rtf) == (2, 0.0, 0.0)
    assert calls[-1].audio_done == pytest.approx(total, abs=1e-3)  # from the kept rows


def test_eta_and_the_line(tmp_path: Path) -> None:
    half = StageProgress("segment", 10, 5, 3600.0, 900.0, 60.0, "x", "processed")
    assert eta(half) == pytest.approx(180.0)  # a quarter of the audio in 60 s: 3 more minutes
    assert describe(half) == (
        "segment: 5/10 items (50%), 0.250/1.000 h audio, 1:00 elapsed, ETA 3:00"
    )
    raw = StageProgress("ingest", 4, 1, None, 30.0, 10.0, "x", "processed")
    assert eta(raw) == pytest.approx(30.0)  # by items when the audio total is unknown
    assert eta(StageProgress("ingest", 4, 0, None, 0.0, 1.0)) is None


def test_log_lines_every_tenth_of_the_items(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i:02d}.in").write_text("x" * (i + 1))
    caplog.set_level(logging.INFO, logger="malmoi.progress")
    with progress_for("copy", tty=False) as progress:
        CopyStage(Params(), tmp_path / "out").run(_items(folder), progress=progress)
    lines = [r.getMessage() for r in caplog.records if r.name == "malmoi.progress"]
    assert len(lines) == 1 + 10, lines  # the start, then every 2 items
    assert lines[0].startswith("copy: 0/20 items (0%)")
    assert lines[-1].startswith("copy: 20/20 items (100%), 0.058 h audio")


def _run_on_a_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stderr on a real pseudo-terminal; return its status and what the
    terminal got."""
    master, slave = os.openpty()
    env = child_env({"TERM": "xterm-256color", "COLUMNS": "160"})
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*MALMOI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env
    )
    os.close(slave)
    got = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise TimeoutError(got.decode(errors="replace"))
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    proc.stdout.read()  # type: ignore[union-attr]
    return proc.wait(timeout=timeout), got.decode(errors="replace")


def test_the_cli_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    _wavs(tmp_path / "in")
    status, terminal = _run_on_a_terminal("ingest", str(tmp_path / "in"), "-o", str(tmp_path / "o"))
    assert status == 0, terminal
    assert BAR in terminal and "\x1b[" in terminal  # drawn, in colour
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal)
    assert re.search(r"ingest ━+ 2/2 items 0\.001 h audio 0:00:0\d ETA 0:00", text), text
    assert "INFO ingest: 2 processed" in text  # log lines still reach the terminal


def test_the_cli_logs_plain_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    _wavs(tmp_path / "in")
    proc = run_malmoi("ingest", str(tmp_path / "in"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert BAR not in proc.stderr and "\x1b[" not in proc.stderr
    assert "INFO ingest: 0/2 items (0%), 0.000 h audio" in proc.stderr
    assert "INFO ingest: 2/2 items (100%), 0.001 h audio" in proc.stderr
