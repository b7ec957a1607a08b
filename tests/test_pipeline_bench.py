"""bench/pipeline_speed.py's pieces, without running the pipeline: the radio-like input and
its ground truth, the stage boundaries read from a build's log, the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.pipeline_speed import (
    SR,
    Boundaries,
    Row,
    Run,
    Sample,
    make_input,
    parse_log,
    read_truth,
    reference_files,
    rows_of,
    table,
)

# lines as a real `malmoi build` writes them (Prefect's console format), trimmed
LOG = """\
08:05:26.510 | INFO    | prefect - Starting temporary server on http://127.0.0.1:8599
08:05:39.115 | INFO    | Flow run 'a-b' - Beginning flow run 'a-b' for flow 'build-dataset'
08:05:39.125 | INFO    | Flow run 'a-b' - building bench into /tmp/x/build: crawl, ingest, separate
08:05:39.150 | INFO    | Flow run 'a-b' - crawl: not used by this config (no web sources)
08:05:39.217 | INFO    | Task run 'gather-ingest-097' - ingest: 1 input(s) from the sources
08:05:39.317 | INFO    | malmoi.progress - ingest: 0/1 items (0%), 0.000 h audio, 0:00 elapsed
08:05:39.923 | INFO    | malmoi.stage - ingest: 1 processed, 0 skipped (done before), 0 failed; \
1 rows kept, 0 rejected in 0.6 s; 0.050 h of audio in, 0.050 h kept, RTF 0.003
08:05:39.946 | INFO    | Task run 'ingest-cde' - Finished in state Completed('ingest: 1 \
processed, 0 skipped (done before), 0 failed; 1 rows kept, 0 rejected in 0.6 s; RTF 0.003')
08:05:39.952 | INFO    | Flow run 'a-b' - ingest: 1 processed, 0 skipped (done before), 0 \
failed; 1 rows kept, 0 rejected in 0.6 s; 0.050 h of audio in, 0.050 h kept, RTF 0.003
08:05:56.283 | INFO    | malmoi.stage - separate: 1 processed, 0 skipped (done before), 0 \
failed; 2 rows kept, 0 rejected in 16.3 s; 0.050 h of audio in, 0.100 h kept, RTF 0.034
08:06:30.000 | INFO    | malmoi.stage - speaker_filter: 40 processed, 0 skipped (done before), \
2 failed; 12 rows kept, 28 rejected in 30.5 s; 0.040 h of audio in, 0.010 h kept, RTF 0.100
"""


def test_input_has_the_length_format_and_content_asked_for(shared: Path, tmp_path: Path) -> None:
    """Half a minute: an mp3 of 30 s (±1 s), stereo 44.1 kHz; the ground truth has speech of
    at least two speakers (none of it the references), a music bed, an interlude and a
    silence, all within the length; a second call reuses the file."""
    from malmoi.audio import probe

    mp3, truth = make_input(0.5, 0, shared, tmp_path)
    info = probe(mp3)
    assert mp3.suffix == ".mp3"
    assert info.codec == "mp3"
    assert info.channels == 2
    assert info.sample_rate == SR
    assert abs(info.duration - 30.0) <= 1.0
    spans = read_truth(truth)
    kinds = {s.kind for s in spans}
    assert {"speech", "music_bed", "interlude", "silence"} <= kinds
    speakers = {s.speaker for s in spans if s.kind == "speech"}
    assert len(speakers) >= 2
    references = {p.stem for p in reference_files(shared)}
    assert not references & {s.detail for s in spans if s.kind == "speech"}
    assert all(0 <= s.start < s.stop <= 30.0 + 1e-6 for s in spans)
    silences = [s for s in spans if s.kind == "silence"]
    assert all(s.stop - s.start <= 5.0 + 1e-6 for s in silences)
    mtime = mp3.stat().st_mtime_ns
    assert make_input(0.5, 0, shared, tmp_path) == (mp3, truth)
    assert mp3.stat().st_mtime_ns == mtime


def test_same_seed_same_input_other_seed_other_input(shared: Path, tmp_path: Path) -> None:
    """The input is deterministic: the seed alone decides the programme."""
    _, a = make_input(0.3, 1, shared, tmp_path / "a")
    _, b = make_input(0.3, 1, shared, tmp_path / "b")
    _, c = make_input(0.3, 2, shared, tmp_path / "c")
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()


def test_log_gives_stage_boundaries_and_counts() -> None:
    """The first stage starts at the 'building' line; each stage ends at its first summary
    line (the flow's repeat of it is ignored) and the next starts there; counts are read."""
    lines = [(float(i), line) for i, line in enumerate(LOG.splitlines())]
    found = parse_log(lines)
    assert found.start == 2.0
    assert found.ends == {"ingest": 6.0, "separate": 9.0, "speaker_filter": 10.0}
    assert found.windows() == [
        ("ingest", 2.0, 6.0),
        ("separate", 6.0, 9.0),
        ("speaker_filter", 9.0, 10.0),
    ]
    assert found.counts["separate"]["kept"] == 2
    assert found.counts["separate"]["seconds"] == 16.3
    assert found.counts["speaker_filter"] == {
        "processed": 40,
        "skipped": 0,
        "failed": 2,
        "kept": 12,
        "rejected": 28,
        "seconds": 30.5,
    }


def test_rows_and_table() -> None:
    """Rows: startup, each stage, the tail, end to end, with CPU from the samples (end to end
    from rusage) and peak RSS per window; the table shows RTF, × real time and CPU shares."""
    found = Boundaries(
        start=10.0,
        ends={"ingest": 12.0, "separate": 42.0},
        counts={
            "ingest": {"processed": 1, "kept": 1, "rejected": 0, "failed": 0, "seconds": 1.5},
            "separate": {"processed": 1, "kept": 2, "rejected": 0, "failed": 0, "seconds": 29},
        },
    )
    samples = [
        Sample(0.0, 0.0, 0),
        Sample(10.0, 8.0, 2**29),
        Sample(12.0, 9.0, 2**30),
        Sample(42.0, 69.0, 3 * 2**30),
        Sample(50.0, 70.0, 2**28),
    ]
    run = Run(True, 50.0, 72.0, found, samples, Path("log"))
    rows = rows_of(run)
    assert [r.name for r in rows] == [
        "startup (imports, Prefect server)",
        "ingest",
        "separate",
        "after the last stage (flow end, shutdown)",
        "end-to-end",
    ]
    assert [r.wall for r in rows] == [10.0, 2.0, 30.0, 8.0, 50.0]
    assert [r.cpu for r in rows] == pytest.approx([8.0, 1.0, 60.0, 72.0 - 69.0, 72.0])
    assert rows[2].rss == 3 * 2**30
    assert rows[-1].rss == 3 * 2**30
    text = table(rows, audio_seconds=600.0, cores=2)
    lines = text.splitlines()
    assert lines[0].startswith("| step | wall (s) | RTF | × real time |")
    assert "CPU (% of 200%)" in lines[0]
    assert len(lines) == 2 + len(rows)
    separate = next(line for line in lines if line.startswith("| separate |"))
    cells = [c.strip() for c in separate.strip("|").split("|")]
    assert cells[1:8] == ["30.0", "0.050", "20.0×", "60.0", "200%", "100%", "3.00"]
    assert "1 processed, 2 kept" in cells[8]
    end = next(line for line in lines if "end-to-end" in line)
    assert "| 50.0 | 0.083 | 12.0× | 72.0 | 144% | 72% |" in end
    assert table([Row("x", 1.0, 0.5, 0)], 10.0, 1).count("\n") == 2


def test_help_runs() -> None:
    """The script runs as a script (its imports resolve from the repository root)."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "pipeline_speed.py"
    proc = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--minutes" in proc.stdout


def test_the_bench_config_is_the_defaults_and_set_changes_one_key(
    shared: Path, tmp_path: Path
) -> None:
    """The bench builds what a new user configures: every stage at its defaults but for the
    source, the references and the transcribe language; ``--set`` changes one key (YAML value)
    and a malformed one is refused."""
    from bench.pipeline_speed import write_config
    from malmoi.config import SegmentConfig, load_config

    mp3 = tmp_path / "in.mp3"
    cfg = load_config(write_config(tmp_path, mp3, shared))
    assert cfg.segment == SegmentConfig()
    assert cfg.denoise.lowpass.cutoff_hz == "auto"
    assert cfg.transcribe.model == "whisper:base"
    assert cfg.speaker_filter.references == reference_files(shared)
    other = tmp_path / "other"
    other.mkdir()
    cfg = load_config(
        write_config(other, mp3, shared, ["segment.gender_engine=ina", "denoise.lowpass.passes=3"])
    )
    assert cfg.segment.gender_engine == "ina"
    assert cfg.denoise.lowpass.passes == 3
    with pytest.raises(SystemExit, match=r"SECTION\.KEY=VALUE"):
        write_config(other, mp3, shared, ["gender_engine"])
