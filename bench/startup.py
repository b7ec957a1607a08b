"""The fixed start-up cost of `malmoi build`: imports, Prefect's temporary server, the first task.

    .venv/bin/python bench/startup.py                    # this checkout, 3 runs of each kind
    .venv/bin/python bench/startup.py --code /tmp/old    # another checkout (before a change)
    .venv/bin/python bench/startup.py --bytecode         # every module's bytecode compiled first

Three tables, each from fresh processes:

1. **Imports**: seconds to import a module in a fresh interpreter (the median of ``--repeats``),
   and whether the heavy libraries of the stages (TensorFlow, torch, pandas, …) are already
   loaded when the flow is about to start (they should not be: each stage imports its own).
2. **Prefect's temporary server alone**: the same process Prefect starts for a flow run with no
   ``PREFECT_API_URL`` (a uvicorn child), timed from its start to its first ``/api/health``
   answer, with a fresh ``PREFECT_HOME`` (its SQLite database created and migrated) and a
   reused one; and what its start-up is made of, timed inside one such process.
3. **`python -m malmoi build`**, the real CLI, with ``--only ingest`` over one 15-s file (so the
   build after its start-up is short), a fresh ``PREFECT_HOME`` then a reused one. The clock
   starts at the process start. The server's start is seen as its process appearing among the
   build's descendants (psutil, every 20 ms), its readiness by this script asking its
   ``/api/health`` every 20 ms; then the build's own output lines, as they come: the flow run
   begins ("Beginning flow run"), the flow's body starts ("building …", where
   bench/pipeline_speed.py starts its first stage), the first task (gather) ends, the first
   stage (ingest) ends, the process exits.

``--code DIR`` runs the CLI of another checkout (e.g. ``git worktree add /tmp/old HEAD~1``), so a
change is timed before and after on the same machine. ``--bytecode`` compiles every module of the
environment and of the checkout once into ``bench/out/startup-pycache`` and runs every process
with ``PYTHONPYCACHEPREFIX`` there: as an environment installed with ``uv pip install
--compile-bytecode`` (or pip, which compiles by default) imports, where a process with
``PYTHONDONTWRITEBYTECODE=1`` over an environment installed by uv without it compiles every
module's source at every start. Run under ``flock /tmp/b24/cpu.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from eval.common import markdown_table  # noqa: E402

OUT = REPO / "bench" / "out"
PYCACHE = OUT / "startup-pycache"
IMPORTS = ("malmoi.cli", "prefect", "flows.build", "prefect.server.api.server")
HEAVY = ("tensorflow", "torch", "pandas", "scipy", "faster_whisper", "ctranslate2", "spleeter")
HEAVY_IMPORTS = ("pandas", "tensorflow", "torch", "faster_whisper")
POLL = 0.02

# the build's own output lines that mark its progress (after the server is ready)
MARKS = {
    "flow run begins": re.compile(r"Beginning flow run"),
    "flow body starts": re.compile(r"Flow run '.*' - building "),
    "first task ends (gather)": re.compile(r"Task run 'gather-.*Finished in state"),
    "first stage ends (ingest)": re.compile(r"Task run 'ingest-.*Finished in state"),
}


def child_env(code: Path, home: Path | None, bytecode: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    if bytecode:
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    else:
        env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def compile_bytecode(code: Path) -> None:
    """Compile every module of the environment and of ``code`` into :data:`PYCACHE` (once)."""
    stamp = PYCACHE / ".done"
    if stamp.exists():
        return
    env = {**child_env(code, None, True)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    for folder in (sysconfig.get_paths()["purelib"], str(code)):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j", "0", folder],
            env=env,
            check=False,  # a few files in the environment are not valid Python 3.11
            stdout=subprocess.DEVNULL,
        )
    stamp.write_text(f"{time.perf_counter() - started:.0f} s\n")


# --- 1. imports -------------------------------------------------------------------------------


def import_seconds(module: str, env: dict[str, str]) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(proc.stdout.split()[-1])


def heavy_loaded(env: dict[str, str], config: Path) -> list[str]:
    """The heavy libraries loaded once the CLI has read the config and imported the flow."""
    code = (
        "import sys\n"
        "from malmoi.config import load_config\n"
        "from malmoi.pipeline import pending, select\n"
        f"cfg = load_config({str(config)!r})\n"
        "pending(cfg, select([], None), False)\n"
        "import malmoi.cli, flows.build\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules) or 'none')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.split()[-1].split(",")


def imports_table(env: dict[str, str], repeats: int, config: Path) -> str:
    rows = []
    for module in (*IMPORTS, *HEAVY_IMPORTS):
        took = [import_seconds(module, env) for _ in range(repeats)]
        rows.append([module, f"{statistics.median(took):.2f}", f"{min(took):.2f}"])
    heavy = heavy_loaded(env, config)
    return (
        markdown_table(["import (fresh interpreter)", "median (s)", "min (s)"], rows, right=(1, 2))
        + f"\n\nHeavy libraries loaded before the flow starts: {', '.join(heavy)}"
    )


# --- 2. the server alone ----------------------------------------------------------------------

INSIDE = r"""
import asyncio, os, time
t0 = time.perf_counter()
marks = []
def mark(name, took=None):
    marks.append((name, time.perf_counter() - t0 if took is None else took))
import prefect.server.api.server as S
mark("import prefect.server.api.server")
from prefect.server.database import interface
import prefect.server.models.block_registration as br
def timed(obj, attr, label):
    fn = getattr(obj, attr)
    async def wrapper(*a, **k):
        s = time.perf_counter(); r = await fn(*a, **k); mark(label, time.perf_counter() - s)
        return r
    setattr(obj, attr, wrapper)
timed(interface.PrefectDBInterface, "create_db", "database migrations")
timed(br, "run_block_auto_registration", "block type registration")
app = S.create_app(ephemeral=True, final=True)
mark("create_app")
async def main():
    async with app.router.lifespan_context(app):
        mark("lifespan done (services up)")
        for name, t in marks:
            print(f"MARK {name}|{t:.3f}", flush=True)
        os._exit(0)
asyncio.run(main())
"""
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def server_seconds(env: dict[str, str]) -> float:
    """Prefect's temporary server's command (SubprocessASGIServer._run_uvicorn_command): seconds
    from its start to its first health answer."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None, "Prefect is not installed"
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent)]
    args += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--log-level", "error", "--lifespan", "on"]
    started = time.perf_counter()
    proc = subprocess.Popen(args, env={**env, **SERVER_ENV, "PREFECT__SERVER_FINAL": "1"})
    try:
        while not healthy(port):
            if proc.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit(f"the server did not start (exit {proc.returncode})")
            time.sleep(POLL)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_inside(env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", INSIDE],
        env={**env, **SERVER_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        name: float(t)
        for name, t in (
            line.removeprefix("MARK ").split("|")
            for line in proc.stdout.splitlines()
            if line.startswith("MARK ")
        )
    }


def server_table(env: dict[str, str], tmp: Path, repeats: int) -> str:
    rows = []
    for blocks in ("true", "false"):
        for label, fresh in (("fresh", True), ("reused", False)):
            home = tmp / "server-home"
            benv = {
                **env,
                "PREFECT_HOME": str(home),
                "PREFECT_API_BLOCKS_REGISTER_ON_START": blocks,
            }
            took, inside = [], []
            for _ in range(repeats):
                if fresh:
                    shutil.rmtree(home, ignore_errors=True)
                took.append(server_seconds(benv))
                if fresh:
                    shutil.rmtree(home, ignore_errors=True)
                inside.append(server_inside(benv))
            parts = {k: statistics.median(d.get(k, 0.0) for d in inside) for k in SERVER_PARTS}
            cells = [f"{label} PREFECT_HOME", blocks, f"{statistics.median(took):.2f}"]
            cells += [f"{parts[k]:.2f}" for k in SERVER_PARTS]
            rows.append(cells)
    header = ["PREFECT_HOME", "blocks registered at start", "start → health (s)"]
    header += [f"{k} (s)" for k in SERVER_PARTS]
    note = (
        f"{repeats} run(s) each, medians. Inside one process: the import and `lifespan done` "
        "are seconds from the process start; the migrations (create or check the database) "
        "and the block types are their own seconds. Blocks registered at start: "
        "PREFECT_API_BLOCKS_REGISTER_ON_START (Prefect's default true; malmoi's false)."
    )
    return markdown_table(header, rows, right=range(2, len(header))) + "\n\n" + note


SERVER_PARTS = (
    "import prefect.server.api.server",
    "create_app",
    "database migrations",
    "block type registration",
    "lifespan done (services up)",
)


# --- 3. the build -----------------------------------------------------------------------------


@dataclass
class Timeline:
    marks: dict[str, float] = field(default_factory=dict)

    def at(self, name: str, t: float) -> None:
        self.marks.setdefault(name, t)


def watch_server(pid: int, started: float, timeline: Timeline, done: threading.Event) -> None:
    """Record when a uvicorn process appears under ``pid`` and when it first answers."""
    import psutil

    root = psutil.Process(pid)
    port = None
    while not done.is_set():
        try:
            children = root.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            if "uvicorn" in cmd and "--port" in cmd:
                timeline.at("server process starts", time.perf_counter() - started)
                port = int(cmd[cmd.index("--port") + 1])
        if port is not None and healthy(port):
            timeline.at("server answers /api/health", time.perf_counter() - started)
            return
        time.sleep(POLL)


def build_once(env: dict[str, str], config: Path, cwd: Path) -> Timeline:
    timeline = Timeline()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "malmoi", "build", str(config), "--only", "ingest"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    done = threading.Event()
    watcher = threading.Thread(target=watch_server, args=(proc.pid, started, timeline, done))
    watcher.start()
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        for name, pattern in MARKS.items():
            if pattern.search(line):
                timeline.at(name, time.perf_counter() - started)
    proc.wait()
    timeline.at("process exits", time.perf_counter() - started)
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"malmoi build failed ({proc.returncode}):\n{''.join(lines)[-3000:]}")
    return timeline


BUILD_MARKS = (
    "server process starts",
    "server answers /api/health",
    *MARKS,
    "process exits",
)


def write_config(tmp: Path, shared: Path) -> Path:
    """A config over one 15-s WAV of ../shared, into ``tmp/run``."""
    config = tmp / "startup.yaml"
    audio = shared / "data" / "ina" / "lamartine.wav"
    config.write_text(
        f"name: startup\noutput_dir: {tmp / 'run'}\n"
        f"sources:\n  - kind: local\n    paths: [{audio}]\n",
        encoding="utf-8",
    )
    return config


def build_table(env: dict[str, str], tmp: Path, config: Path, repeats: int) -> str:
    runs: dict[str, list[Timeline]] = {"fresh PREFECT_HOME": [], "reused PREFECT_HOME": []}
    home = tmp / "build-home"
    for _ in range(repeats):
        for label in runs:
            if label.startswith("fresh"):
                shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(tmp / "run", ignore_errors=True)
            runs[label].append(build_once({**env, "PREFECT_HOME": str(home)}, config, tmp))
    header = ["seconds from the process start (median)", *runs]
    rows = []
    for mark in BUILD_MARKS:
        cells = [mark]
        for timelines in runs.values():
            values = [t.marks[mark] for t in timelines if mark in t.marks]
            cells.append(f"{statistics.median(values):.2f}" if values else "—")
        rows.append(cells)
    return markdown_table(header, rows, right=(1, 2)) + (
        f"\n\n{repeats} run(s) each; `python -m malmoi build CONFIG --only ingest` over one "
        "15-s WAV"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout to run")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bytecode", action="store_true", help="precompiled bytecode")
    parser.add_argument("--only", choices=("imports", "server", "build"), action="append")
    args = parser.parse_args()
    parts = args.only or ["imports", "server", "build"]
    code = args.code.resolve()
    if args.bytecode:
        compile_bytecode(code)
    env = child_env(code, None, args.bytecode)
    commit = subprocess.run(
        ["git", "-C", str(code), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    load = os.getloadavg()
    print(
        f"code: {code} ({commit or 'not a git checkout'}); bytecode: "
        f"{'precompiled' if args.bytecode else 'as the environment has it'}; "
        f"{os.cpu_count()} CPUs; load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    with tempfile.TemporaryDirectory(prefix="malmoi-startup-") as name:
        tmp = Path(name)
        config = write_config(tmp, args.shared)
        if "imports" in parts:
            print("### Imports\n")
            print(imports_table(env, args.repeats, config), "\n", flush=True)
        if "server" in parts:
            print("### Prefect's temporary server alone\n")
            print(server_table(env, tmp, args.repeats), "\n", flush=True)
        if "build" in parts:
            print("### `malmoi build`\n")
            print(build_table(env, tmp, config, args.repeats), "\n", flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
