"""Prefect's temporary API server, started at once, while the build is still importing Prefect.

``malmoi build`` with no ``PREFECT_API_URL`` runs its flow against the temporary ("ephemeral")
server Prefect starts when the flow run begins: a uvicorn child process that imports Prefect's
server, checks (on a fresh ``PREFECT_HOME``: creates) its SQLite database and starts its
services — about 5 s on 2 cores, 9 s on a fresh ``PREFECT_HOME`` — and only then does the flow
run begin. Importing Prefect in the build's own process takes about 4 s more *before* that
(``bench/startup.py``). :func:`start_temporary_server` starts the same server before those
imports, so the two overlap; ``flows.build.use_temporary_server`` hands it to Prefect once
Prefect is imported, and Prefect uses it as the temporary server it would have started (and stops
it at exit, as its own).

This module does not import Prefect (that is what it saves time on), and the server it starts
is Prefect's own command line (``SubprocessASGIServer._run_uvicorn_command`` of Prefect 3.8.8).
"""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from malmoi.logs import get_logger
from malmoi.procs import tool_command

log = get_logger(__name__)

# what Prefect's SubprocessASGIServer sets for its child (UI off, ephemeral services only)
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
PORTS = range(8000, 9000)  # Prefect's range for its temporary server


@dataclass
class EarlyServer:
    """A temporary server started by :func:`start_temporary_server`, not yet handed to Prefect."""

    port: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the server answers its health check (True), or exits, or ``timeout``
        seconds have passed since it started (False)."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log.debug("the early temporary server exited (%s)", self.process.returncode)
                return False
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return True
            except OSError:  # not listening yet (URLError is an OSError)
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop the server (not handed to Prefect: unused)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment or the active profile in
    ``$PREFECT_HOME/profiles.toml`` — where ``prefect config set`` puts it —, read without
    importing Prefect. (Prefect reads other sources too; ``flows.build`` asks Prefect itself
    before it uses a server started here.)"""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    settings = profiles.get("profiles", {}).get(active, {})
    url = settings.get("PREFECT_API_URL") if isinstance(settings, dict) else None
    return str(url) if url else None


def _free_port() -> int | None:
    for _ in range(10):
        port = random.choice(PORTS)
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return None


def start_temporary_server() -> EarlyServer | None:
    """Start Prefect's temporary API server now, as Prefect would when the flow run begins;
    None (nothing started) when a Prefect API is configured (then no temporary server is
    wanted), ephemeral mode is off, or Prefect is not installed. Call from the main thread (the
    server gets the death signal when the thread that started it ends)."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        return None
    off = {"0", "false", "no", "off"}
    allowed = (
        os.environ.get(key, "true").strip().lower() not in off
        for key in ("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "PREFECT_SERVER_EPHEMERAL_ENABLED")
    )
    if configured_api_url() or not all(allowed):
        return None
    port = _free_port()
    if port is None:
        return None
    app_dir = Path(next(iter(spec.submodule_search_locations))).parent
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(app_dir),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    process = subprocess.Popen(tool_command(args), env={**os.environ, **SERVER_ENV})
    log.debug("started Prefect's temporary server early on port %d", port)
    return EarlyServer(port, process)
