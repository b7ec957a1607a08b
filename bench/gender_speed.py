"""The segment stage's speed with each gender engine, and how often it gets a slice's gender right.

    .venv/bin/python bench/gender_speed.py                      # 10 minutes, every engine
    .venv/bin/python bench/gender_speed.py --engines ina-slice embedding --minutes 5

The input is bench/pipeline_speed.py's radio-like mp3 (LibriSpeech test-other speakers 3005
and 2609 (M), 3331 and 367 (F) taking turns, a music bed under a third of the turns, music
interludes and silences; made once, cached) with its ground truth. It is not separated first:
the comparison is between gender engines, on the same speech detector's output.

Each engine runs in a fresh process: the real :class:`segment.stage.SegmentStage` (default
settings but ``gender_engine``) through its normal ``run`` on the mp3, into a new folder.
Reported: its setup (model loading, timed apart by ``ensure_setup``), the whole run's wall
seconds (setup included) and real-time factor, the process's CPU seconds and peak RSS, the slices
kept, and the slices' gender against the ground truth: a slice's true gender is that of the
speaker the truth says speaks the longest within it (slices with no true speech are left out);
``untold`` slices have no gender (too little speech) and count as wrong; the last column
counts the slices holding at least 0.5 s of a man's and 0.5 s of a woman's speech (turns that
slicing merged across a short pause: ``ina`` cuts at its gender changes, the others cannot;
the speaker filter looks for voice changes inside slices). Prints a Markdown table and writes
it to bench/out/gender_speed-<minutes>m.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.pipeline_speed import make_input, read_truth  # noqa: E402
from eval.common import markdown_table  # noqa: E402

OUT = REPO / "bench" / "out"
ENGINES = ("ina", "ina-slice", "embedding")
MIXED = 0.5  # seconds of each gender's true speech that make a slice mixed


def child(engine: str, mp3: Path, out: Path) -> None:
    from ingest.local import file_item
    from malmoi.config import SegmentConfig
    from malmoi.manifest import read_records
    from segment.stage import SegmentStage

    started = time.perf_counter()
    stage = SegmentStage(SegmentConfig(gender_engine=engine), out)
    stage.ensure_setup()
    loaded = time.perf_counter()
    report = stage.run([file_item(mp3)])
    done = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rows = read_records(out / "manifest.csv")
    print(
        json.dumps(
            {
                "setup_s": loaded - started,
                "wall_s": done - started,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "rss_gb": usage.ru_maxrss / 2**20,
                "failed": report.failed,
                "slices": [[float(r["start"]), float(r["stop"]), r["gender"]] for r in rows],
            }
        )
    )


def true_speech(start: float, stop: float, truth: list) -> dict[str, float]:
    """Seconds of true speech in [start, stop] by gender (``male``, ``female``)."""
    by_gender: dict[str, float] = {}
    for span in truth:
        if span.kind == "speech":
            overlap = min(stop, span.stop) - max(start, span.start)
            if overlap > 0:
                g = {"M": "male", "F": "female"}[span.gender]
                by_gender[g] = by_gender.get(g, 0.0) + overlap
    return by_gender


def true_gender(by_gender: dict[str, float]) -> str:
    """The gender that speaks the longest ('' when nobody speaks)."""
    return max(by_gender, key=by_gender.__getitem__) if by_gender else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0, help="the input's seed")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "MP3", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    mp3, truth_csv = make_input(args.minutes, args.seed, args.shared)
    truth = read_truth(truth_csv)
    seconds = args.minutes * 60
    rows = []
    for engine in args.engines:
        with tempfile.TemporaryDirectory(prefix="gender-speed-") as tmp:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", engine, str(mp3), str(Path(tmp) / "seg")],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        if proc.returncode != 0:
            print(f"{engine}: failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        speech = [(true_speech(a, b, truth), g) for a, b, g in r["slices"]]
        mixed = sum(min(s.get("male", 0.0), s.get("female", 0.0)) >= MIXED for s, _ in speech)
        judged = [(true_gender(s), g) for s, g in speech if s]
        right = sum(t == g for t, g in judged)
        untold = sum(g == "" for _, g in judged)
        rows.append(
            [
                engine,
                f"{r['setup_s']:.1f}",
                f"{r['wall_s']:.1f}",
                f"{r['wall_s'] / seconds:.3f}",
                f"{r['cpu_s']:.1f}",
                f"{r['rss_gb']:.2f}",
                len(r["slices"]),
                f"{right}/{len(judged)} ({100 * right / max(len(judged), 1):.1f}%)",
                untold,
                mixed,
            ]
        )
        print(f"  {engine}: {r['wall_s']:.1f} s", flush=True)
    header = [
        "gender_engine",
        "setup (s)",
        "wall (s)",
        "RTF",
        "CPU (s)",
        "peak RSS (GB)",
        "slices",
        "gender right",
        "untold",
        f"both genders (>= {MIXED:g} s each)",
    ]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = (
        f"segment stage on {args.minutes:g} min of radio-like mp3 (seed {args.seed}), "
        f"not separated; load average after: {load}\n\n"
        + markdown_table(header, rows, right=range(1, 10))
    )
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"gender_speed-{args.minutes:g}m.md").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
