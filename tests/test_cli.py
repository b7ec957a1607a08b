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
        "import sys, malmoi.cli; "
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
