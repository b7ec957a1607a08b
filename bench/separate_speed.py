"""Separation throughput and memory: real-time factor and peak RSS per engine and input length.

    .venv/bin/python bench/separate_speed.py                 # spleeter 10 and 60 min, repet 10 min
    .venv/bin/python bench/separate_speed.py --engines spleeter --minutes 10 60

Each run is a fresh child process (so its peak RSS is its own): it loads the engine once,
separates one 44.1 kHz stereo WAV of speech over music, and reports load time, separation time
and ``ru_maxrss``. Inputs are made once under bench/out/ from ../shared (LibriSpeech + MUSAN
music), or from the demo's generated speech and music when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import write_looped  # noqa: E402
from eval.common import markdown_table  # noqa: E402

OUT = REPO / "bench" / "out"
SR = 44100


def make_input(minutes: int, shared: Path) -> Path:
    """A ``minutes``-long stereo WAV, written block by block (never held whole in memory)."""
    path = OUT / f"speech_music_{minutes}min.wav"
    if path.exists():
        return path
    from eval.separation import background_track, mix, speech_track

    if (shared / "data").is_dir():
        speech = speech_track(shared, 120.0)
        music = mix(speech, background_track(shared, "music", len(speech)), 0.0)
    else:
        from ingest.synthetic import music_bed

        rng = np.random.default_rng(0)
        speech = (rng.standard_normal(120 * SR) * 0.05).astype(np.float32)
        music = music_bed(len(speech))
    loop = np.stack([speech + music, 0.9 * speech + 1.1 * music], axis=1) * 0.5
    return write_looped(path, loop, minutes, SR)


def child(engine: str, wav: Path, chunk_seconds: float) -> None:
    """Runs in the child process: load, separate, print one JSON line."""
    from malmoi.config import SeparateConfig
    from separate.stage import make_engine

    started = time.perf_counter()
    eng = make_engine(SeparateConfig(engine=engine, chunk_seconds=chunk_seconds))
    loaded = time.perf_counter()
    eng.separate_file(wav, OUT / f"{engine}_vocals.wav", OUT / f"{engine}_accompaniment.wav")
    done = time.perf_counter()
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"load_s": loaded - started, "separate_s": done - loaded, "rss_gb": rss_gb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=["spleeter", "repet"])
    ap.add_argument("--minutes", nargs="+", type=int, default=[10, 60])
    ap.add_argument(
        "--repet-max-minutes",
        type=int,
        default=10,
        help="REPET is slow (RTF about 0.6): skip it on longer inputs",
    )
    ap.add_argument("--chunk-seconds", type=float, default=30.0)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "WAV"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.chunk_seconds)
        return

    rows = []
    for minutes in args.minutes:
        wav = make_input(minutes, args.shared)
        for engine in args.engines:
            if engine == "repet" and minutes > args.repet_max_minutes:
                continue
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    engine,
                    str(wav),
                    "--chunk-seconds",
                    str(args.chunk_seconds),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                rows.append((engine, minutes, None))
                continue
            rows.append((engine, minutes, json.loads(proc.stdout.strip().splitlines()[-1])))
    header = ["engine", "input", "load (s)", "separate (s)", "real-time factor", "peak RSS (GB)"]
    cells = []
    for engine, minutes, r in rows:
        if r is None:
            cells.append([engine, f"{minutes} min", "failed", "", "", ""])
            continue
        rtf = r["separate_s"] / (minutes * 60)
        cells.append(
            [
                engine,
                f"{minutes} min",
                f"{r['load_s']:.1f}",
                f"{r['separate_s']:.1f}",
                f"{rtf:.3f}",
                f"{r['rss_gb']:.2f}",
            ]
        )
    print(markdown_table(header, cells, right=range(1, 6)))


if __name__ == "__main__":
    main()
