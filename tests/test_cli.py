import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from tests.conftest import run_malmoi


def test_help_lists_the_commands() -> None:
    proc = run_malmoi("--help")
    assert proc.returncode == 0
    for command in ("ingest", "build", "validate", "serve", "models"):
        assert command in proc.stdout
    models = run_malmoi("models", "--help")
    assert "list" in models.stdout and "fetch" in models.stdout


def test_cli_imports_no_heavy_library() -> None:
    """`malmoi --help` stays instant: TensorFlow, torch and Prefect load only in commands."""
    code = (
        "import sys, typer, malmoi.cli; typer.main.get_command(malmoi.cli.build_app()); "
        "print(sorted(m for m in ('tensorflow', 'torch', 'prefect', 'spleeter', "
        "'inaSpeechSegmenter', 'resemblyzer', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_option_value_is_a_clear_error(tmp_path) -> None:
    proc = run_malmoi("ingest", str(tmp_path), "--out", str(tmp_path / "o"), "--channels", "five")
    assert proc.returncode == 2
    text = " ".join(proc.stderr.replace("│", " ").split())
    assert "'five' is not one of 'keep', 'mono', 'stereo'" in text


def test_a_list_option_takes_every_value_up_to_the_next_option() -> None:
    import typer

    from malmoi.cli import build_app
    from malmoi.verbs import spread_list_options

    commands = typer.main.get_command(build_app()).commands  # type: ignore[attr-defined]
    sweep = commands["sweep"]
    assert spread_list_options(sweep, ["seg", "--min-duration", "0.3", "0.5", "-1"]) == [
        "seg",
        *("--min-duration", "0.3", "--min-duration", "0.5", "--min-duration", "-1"),
    ]
    spk = commands["speaker-filter"]
    given = ["a.wav", "--reference", "r1", "r2", "--out", "o", "--threshold", "2", "b.wav"]
    assert spread_list_options(spk, given) == [
        *("a.wav", "--reference", "r1", "--reference", "r2"),
        *("--out", "o", "--threshold", "2", "b.wav"),
    ]
    assert spread_list_options(spk, ["--reference", "r1", "--", "x"]) == [
        "--reference",
        "r1",
        "--",
        "x",
    ]


def test_sweep_on_a_wrong_folder_is_one_line(tmp_path) -> None:
    """`malmoi sweep` on a missing folder, an empty one or another stage's folder: one line."""
    (tmp_path / "empty").mkdir()
    other = tmp_path / "denoise"
    other.mkdir()
    (other / "config.yaml").write_text("segment: {}\n", encoding="utf-8")
    (other / "progress.csv").write_text("id,status\nclip,ok\n", encoding="utf-8")
    for folder, says in (
        (tmp_path / "nothere", "no such folder"),
        (tmp_path / "empty", "not a stage's output folder"),
        (other, "no segment tables"),
    ):
        proc = run_malmoi("sweep", str(folder))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"error: {folder}: {says}"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr


def test_version() -> None:
    import importlib.metadata

    import malmoi

    try:
        expected = importlib.metadata.version("malmoi")
    except importlib.metadata.PackageNotFoundError:
        expected = malmoi.__version__
    proc = run_malmoi("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"malmoi {expected}\n"


def test_datasets_folder_is_ignored_by_git() -> None:
    """`datasets/` (where exports go in the README's examples) is in .gitignore, as `runs/` is."""
    import shutil

    import pytest

    from tests.conftest import REPO

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("datasets/ko/wavs/a.wav", "runs/demo/manifest.csv"):
        proc = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path], check=False)
        assert proc.returncode == 0, f"{path} is not ignored"


# --- fail loudly on nothing (issue 20) -------------------------------------------------------


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_a_verb_given_only_missing_files_or_nothing_to_read_exits_1(tmp_path) -> None:
    missing = run_malmoi("ingest", "nothere.mp3", "--out", "o", cwd=tmp_path)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    line = _error_line(missing)
    assert "ingest: every input failed (1)" in line and "nothere.mp3" in line
    assert (tmp_path / "o" / "failures.csv").is_file()  # still recorded
    (tmp_path / "empty").mkdir()
    empty = run_malmoi("segment", "empty", "--out", "s", cwd=tmp_path)
    assert empty.returncode == 1
    assert "segment: no audio/video files in empty" in _error_line(empty)
    assert not (tmp_path / "s").exists()  # nothing run, nothing written
    # partial failures keep today's behaviour, and so does a no-op rerun: exit 0
    from malmoi.manifest import read_manifest
    from tests.media import tone, write_wav

    write_wav(tmp_path / "a.wav", tone(1.0, sr=22050, channels=1), sr=22050)
    partial = run_malmoi("ingest", "a.wav", "nothere.mp3", "--out", "o", cwd=tmp_path)
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert len(read_manifest(tmp_path / "o")) == 1
    assert len(read_manifest(tmp_path / "o", "failures.csv")) == 1
    again = run_malmoi("ingest", "a.wav", "--out", "o", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 processed, 1 skipped" in again.stdout


def _local_config(tmp_path, paths: list[str]):
    import yaml

    path = tmp_path / "local.yaml"
    cfg = {
        "name": "local",
        "output_dir": "runs/local",
        "sources": [{"kind": "local", "paths": paths}],
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_a_missing_source_path_is_a_validate_error_and_stops_build(tmp_path) -> None:
    config = _local_config(tmp_path, ["data/raw"])
    checked = run_malmoi("validate", str(config), cwd=tmp_path)
    assert checked.returncode == 1
    assert "'sources.0.paths.0': no such file or folder: data/raw" in checked.stderr
    assert str(tmp_path) in checked.stderr  # relative: from the working directory
    built = run_malmoi("build", str(config), cwd=tmp_path)
    assert built.returncode == 2
    assert "'sources.0.paths.0': no such file or folder: data/raw" in _error_line(built)
    assert not (tmp_path / "runs").exists()  # stopped before any stage (and Prefect)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    ok = run_malmoi("validate", str(config), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_a_build_whose_sources_yield_no_input_exits_1(tmp_path) -> None:
    (tmp_path / "data" / "raw").mkdir(parents=True)  # there, but with no media in it
    config = _local_config(tmp_path, ["data/raw"])
    built = run_malmoi("build", str(config), "--only", "ingest", cwd=tmp_path)
    assert built.returncode == 1, built.stdout + built.stderr[-3000:]
    assert "ingest: the sources yield no input" in _error_line(built)
    flowed = run_malmoi("build", str(config), "--only", "ingest", "--always-flow", cwd=tmp_path)
    assert flowed.returncode == 1, flowed.stdout + flowed.stderr[-3000:]  # after a flow run
    assert "ingest: the sources yield no input" in _error_line(flowed)


def test_help_at_80_columns_shows_every_option_name_in_full() -> None:
    """Issue 20: typer's rich option table cut long names short at 80 columns
    (``--min-dnsmos-o…`` in ``malmoi denoise --help``); every command's help names each of its
    options, and their ``--no-…`` forms, whole."""
    import re

    import typer
    from typer.testing import CliRunner

    from malmoi.cli import build_app

    app = build_app()

    def commands(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from commands(sub, [*path, name])

    runner = CliRunner()
    shown = 0
    for path, command in commands(typer.main.get_command(app), []):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, (path, result.output)
        names = [n for p in command.params for n in (*p.opts, *p.secondary_opts) if n[0] == "-"]
        for name in names:
            whole = rf"(?<![\w-]){re.escape(name)}(?![\w-])"
            assert re.search(whole, result.output), f"malmoi {' '.join(path)} --help: {name}"
            shown += 1
    assert shown > 100  # every verb's options were seen
