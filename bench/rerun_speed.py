"""How long `malmoi build configs/demo.yaml` takes the first time and again with nothing changed.

    .venv/bin/python bench/rerun_speed.py            # into a fresh folder under bench/out/
    .venv/bin/python bench/rerun_speed.py --runs 3   # the no-op rerun three times

Each build is the real CLI in a fresh process, in an empty working folder with a brand-new
PREFECT_HOME (so the first run pays Prefect's database creation, as on a fresh machine) and the
model store that `malmoi models fetch` fills (a fetch is not timed: run it first). It prints a
table: wall seconds per run, and each rerun as a share of the first. Also one `--always-flow`
rerun, which goes through Prefect's temporary server although there is nothing to do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from eval.common import markdown_table  # noqa: E402

OUT = REPO / "bench" / "out" / "rerun"


def build(folder: Path, env: dict[str, str], *extra: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "malmoi", "build", str(REPO / "configs/demo.yaml"), *extra],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"malmoi build failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="no-op reruns to time")
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(OUT / "prefect-home"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    env.pop("PREFECT_API_URL", None)
    rows = [("first build", *build(OUT, env))]
    for i in range(args.runs):
        rows.append((f"rerun {i + 1}, nothing changed", *build(OUT, env)))
    rows.append(("rerun with --always-flow", *build(OUT, env, "--always-flow")))
    first = rows[0][1]
    cells = [[name, f"{seconds:.1f}", f"{100 * seconds / first:.1f}%"] for name, seconds, _ in rows]
    print(markdown_table(["run", "wall (s)", "share of the first"], cells, right=(1, 2)))
    last = rows[1][2].splitlines()
    print("\nrerun said:", *last[:4], sep="\n  ")


if __name__ == "__main__":
    main()
