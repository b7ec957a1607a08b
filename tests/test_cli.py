import subprocess
import sys

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
