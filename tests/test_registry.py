"""The stage registry: a stage is its package plus one line. A small stage that lives in the tests
(tests/level_stage.py, not in the product) is registered and runs through the config, its CLI
verb, ``malmoi run``, ``malmoi build`` (the Prefect flow) and export's lineage, touching no other
file."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from malmoi import registry
from malmoi.config import ConfigError, parse_config
from malmoi.manifest import read_records
from tests.conftest import REPO, run_malmoi
from tests.level_stage import SPEC
from tests.media import korean_speech

PLUGIN = {registry.EXTRA_ENV: "tests.level_stage:SPEC@export"}


@pytest.fixture
def level() -> Iterator[None]:
    registry.register(SPEC, before="export")
    try:
        yield
    finally:
        registry.unregister("level")


def _tone(path: Path, db: float, seconds: float = 1.0, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    amp = 10 ** (db / 20) * np.sqrt(2)  # a sine's RMS is its amplitude / sqrt(2)
    sf.write(str(path), (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


def test_a_registered_stage_has_its_place_config_section_and_verb(level, tmp_path: Path) -> None:
    from malmoi.cli import build_app
    from malmoi.registry import input_of, names, spec

    assert names()[-2:] == ("level", "export")
    cfg = parse_config(
        {
            "name": "x",
            "output_dir": str(tmp_path),
            "sources": [{"kind": "local", "paths": ["a.wav"]}],
        }
    )
    assert cfg.level.min_dbfs == -70.0  # the section, with its model's defaults
    assert input_of(cfg, spec("level")) == "transcribe"  # the last stage before it that runs
    no_asr = cfg.transcribe.model_copy(update={"enabled": False})
    off = cfg.model_copy(update={"transcribe": no_asr})
    assert input_of(off, spec("level")) == "denoise"  # transcribe off: the one before
    assert input_of(cfg, spec("export")) == "level"  # export reads the new stage now
    with pytest.raises(ConfigError, match=r"unknown key 'level.nope'; allowed: min_dbfs"):
        parse_config({**cfg.model_dump(mode="json"), "level": {"nope": 1}})

    loud, quiet = _tone(tmp_path / "loud.wav", -20.0), _tone(tmp_path / "quiet.wav", -80.0)
    runner = CliRunner()
    app = build_app()
    shown = runner.invoke(app, ["level", "--help"])
    assert shown.exit_code == 0 and "--min-dbfs" in shown.output and "-70.0" in shown.output
    out = tmp_path / "cli"
    done = runner.invoke(app, ["level", str(loud), str(quiet), "--out", str(out)])
    assert done.exit_code == 0, done.output
    kept = read_records(out / "manifest.csv")
    assert [float(r["level_dbfs"]) for r in kept] == [pytest.approx(-20.0, abs=0.05)]
    (rejected,) = read_records(out / "rejected.csv")
    assert rejected["reason"].startswith("level -") and rejected["reason"].endswith("under -70.0")
    again = runner.invoke(app, ["level", str(loud), str(quiet), "--out", str(out)])
    assert "level: 0 processed, 2 skipped" in again.output  # resumes like every stage
    out2 = tmp_path / "run"
    done = runner.invoke(
        app, ["run", "level", str(loud), "--out", str(out2), "--set", "min_dbfs=-10"]
    )
    assert done.exit_code == 0, done.output
    assert (
        read_records(out2 / "manifest.csv") == [] and len(read_records(out2 / "rejected.csv")) == 1
    )
    bad = runner.invoke(app, ["run", "level", str(loud), "--out", str(out2), "--set", "min_dbfs=3"])
    assert bad.exit_code == 2 and "min_dbfs: Input should be less than or equal to 0" in bad.output


def test_a_plugged_in_stage_runs_in_the_build_and_export_reads_through_it(
    level, tmp_path: Path
) -> None:
    """``malmoi build`` with the stage plugged in (MALMOI_EXTRA_STAGES): the flow runs it between
    denoise and export, export reads its slices and finds the measurements of the rows before
    it (offsets, gender, scores) through the lineage, its config section is written beside
    every manifest, and a rerun has nothing to do."""
    speech = korean_speech(
        tmp_path / "raw/말.wav", "안녕하세요. 오늘은 날씨가 좋습니다. 말모이 시험을 합니다."
    )
    config = tmp_path / "level.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "leveltest",
                "output_dir": str(tmp_path / "out"),
                "sources": [{"kind": "local", "paths": [str(speech)]}],
                "separate": {"engine": "repet"},
                "segment": {"min_duration": 0.5},
                "denoise": {"scores": False},
                # the rules off: the test's speech is espeak-ng's, not what Whisper base knows
                "transcribe": {
                    "min_language_prob": 1.0,
                    "max_cer": 1.0,
                    "rate_fence": None,
                    "min_speech_share": 0.0,
                    "max_compression_ratio": 100.0,
                },
                "level": {"min_dbfs": -60.0},
            },
            allow_unicode=True,
        )
    )
    assert run_malmoi("validate", str(config)).returncode == 1  # without the plug-in: unknown
    proc = run_malmoi("build", str(config), env=PLUGIN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    level_rows = read_records(out / "level/manifest.csv")
    assert level_rows, proc.stdout
    assert f"level: {len(level_rows)} processed, 0 skipped, 0 failed" in proc.stdout
    assert yaml.safe_load((out / "export/config.yaml").read_text())["level"] == {"min_dbfs": -60.0}
    denoised = {r["id"]: r for r in read_records(out / "denoise/manifest.csv")}
    slices = {r["id"]: r for r in read_records(out / "segment/manifest.csv")}
    exported = [
        json.loads(line) for line in (out / "export/manifest.jsonl").read_text().splitlines()
    ]
    assert sorted(e["id"] for e in exported) == sorted(r["id"] for r in level_rows)
    for entry in exported:
        row = next(r for r in level_rows if r["id"] == entry["id"])
        denoise_row = denoised[row["parent_id"]]
        cut = slices[denoise_row["parent_id"]]
        assert "start" not in row  # the level stage does not carry the slice's offsets…
        assert entry["source_offset"] == pytest.approx(float(cut["start"]))  # …export finds them
        assert entry["source_end"] == pytest.approx(float(cut["stop"]))
        assert entry["gender"] == cut["gender"] != ""
        assert entry["text"] == row["text"] and entry["text_source"] == "level"  # no subtitles
        info = sf.info(str(out / "export" / entry["audio_filepath"]))
        assert info.frames / info.samplerate == pytest.approx(float(row["duration"]), abs=0.01)
    from malmoi.lineage import Lineage

    lineage = Lineage(out)
    assert [lineage.value({"id": "x", "parent_id": r["id"]}, "level_dbfs") for r in level_rows] == [
        r["level_dbfs"] for r in level_rows
    ]
    noop = run_malmoi("build", str(config), env=PLUGIN)
    assert "level: nothing to do" in noop.stdout and "no flow run started" in noop.stdout
    verb = run_malmoi("level", "--help", env=PLUGIN)
    assert verb.returncode == 0 and "--min-dbfs" in verb.stdout


def test_the_product_does_not_name_the_test_stage() -> None:
    """No code outside the tests names the level stage: registering it touched nothing."""
    tracked = subprocess.run(
        ["git", "grep", "-l", "-e", "level_stage", "-e", "LevelStage", "--", "*.py", ":!tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert tracked.returncode in (0, 1), tracked.stderr
    assert tracked.stdout == ""
