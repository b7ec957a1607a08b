"""Prefect's temporary server started early (flows/server.py) and handed to Prefect
(flows.build.use_temporary_server): when it is started, what Prefect does with it, and the
fallbacks (Prefect starts its own)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import ENV_DEFAULTS
from flows.server import EarlyServer, configured_api_url, start_temporary_server

PROFILES = """active = "{active}"

[profiles.ephemeral]
PREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "true"

[profiles.remote]
PREFECT_API_URL = "http://prefect.example:4200/api"
"""


@pytest.fixture
def prefect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "prefect-home"
    home.mkdir()
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    return home


def test_the_api_url_is_read_from_the_environment_and_the_active_profile(
    prefect_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert configured_api_url() is None  # no profiles file: Prefect's default, ephemeral
    (prefect_home / "profiles.toml").write_text(PROFILES.format(active="ephemeral"))
    assert configured_api_url() is None
    (prefect_home / "profiles.toml").write_text(PROFILES.format(active="remote"))
    assert configured_api_url() == "http://prefect.example:4200/api"
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")  # the variable picks the profile
    assert configured_api_url() is None
    monkeypatch.setenv("PREFECT_API_URL", "http://other:4200/api")
    assert configured_api_url() == "http://other:4200/api"


def test_no_server_is_started_when_an_api_is_configured_or_ephemeral_mode_is_off(
    prefect_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (prefect_home / "profiles.toml").write_text(PROFILES.format(active="remote"))
    assert start_temporary_server() is None
    (prefect_home / "profiles.toml").unlink()
    monkeypatch.setenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "false")
    assert start_temporary_server() is None


def test_the_package_sets_prefects_defaults_and_a_user_setting_wins() -> None:
    code = "import os, flows; print(os.environ['PREFECT_API_BLOCKS_REGISTER_ON_START'])"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    assert ENV_DEFAULTS["PREFECT_API_BLOCKS_REGISTER_ON_START"] == "false"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["false"], out.stderr
    env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "true"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["true"], out.stderr


def test_a_server_that_does_not_come_up_is_not_handed_to_prefect() -> None:
    """An early server that exits at once: use_temporary_server says False at once (Prefect
    then starts its own) and leaves Prefect's temporary server untouched."""
    from prefect.server.api.server import SubprocessASGIServer

    from flows.build import use_temporary_server

    dead = EarlyServer(port=1, process=subprocess.Popen([sys.executable, "-c", "exit(3)"]))
    started = time.monotonic()
    assert use_temporary_server(dead) is False
    assert time.monotonic() - started < 10
    assert dead.process.poll() == 3
    assert not SubprocessASGIServer().running


def test_a_configured_api_stops_the_early_server() -> None:
    """Prefect's settings have the last word: with an API URL set (from any source), the early
    server is stopped and not used."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.build import use_temporary_server

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert use_temporary_server(EarlyServer(port=9, process=sleeper)) is False
    assert sleeper.poll() is not None  # stopped
