"""Denoise filtering of long inputs: throughput and peak RSS of filter_file (blocks with
overlap), and its deviation from whole-file filtering.

    .venv/bin/python bench/denoise_memory.py                      # 60 min, blocks of 60 s
    .venv/bin/python bench/denoise_memory.py --minutes 10 --blocks 20 60

Each run is a fresh child process (peak RSS = its ru_maxrss) filtering a 44.1 kHz stereo WAV of
looped LibriSpeech speech with the default chain (lowpass 5 kHz / 36 dB / 2 passes) plus a
70 Hz high-pass and notches at 60 Hz and 6 kHz. The deviation is measured on a shorter piece,
against apply() on the whole piece in memory.
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
    path = OUT / f"speech_stereo_{minutes}min.wav"
    if path.exists():
        return path
    from eval.separation import speech_track

    speech = speech_track(shared, 120.0)
    t = np.arange(len(speech)) / SR
    hum = 0.01 * np.sin(2 * np.pi * 60 * t) + 0.003 * np.sin(2 * np.pi * 6000 * t)
    loop = np.stack([speech + hum, 0.8 * speech + hum], axis=1).astype(np.float32)
    return write_looped(path, loop, minutes, SR)


def chain():
    from denoise.filters import Filter, highpass_sos, lowpass_sos, notch_filter

    return [
        Filter("highpass", highpass_sos(70, 36, SR)),
        notch_filter(60, 30, SR),
        notch_filter(6000, 30, SR),
        Filter("lowpass", lowpass_sos(5000, 36, SR), 2),
    ]


def child(wav: Path, block_seconds: float) -> None:
    from denoise.filters import filter_file, overlap_frames

    filters = chain()
    dest = OUT / f"filtered_{wav.stem}_{block_seconds:g}.wav"
    started = time.perf_counter()
    filter_file(wav, dest, filters, block_seconds=block_seconds)
    seconds = time.perf_counter() - started
    dest.unlink()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "overlap": overlap_frames(filters)}))


def deviation_db(wav: Path, block_seconds: float) -> float:
    import soundfile as sf

    from denoise.filters import apply, filter_file

    filters = chain()
    dest = OUT / f"deviation_{wav.stem}.wav"
    filter_file(wav, dest, filters, block_seconds=block_seconds)
    out, _ = sf.read(str(dest), dtype="float64")
    dest.unlink()
    ref = apply(sf.read(str(wav), dtype="float64")[0], filters).astype(np.float64)
    return float(10 * np.log10(np.sum((out - ref) ** 2) / np.sum(ref**2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--blocks", type=float, nargs="+", default=[60.0])
    ap.add_argument("--check-minutes", type=int, default=5)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--child", nargs=2, metavar=("WAV", "BLOCK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), float(args.child[1]))
        return
    wav = make_input(args.minutes, args.shared)
    rows = []
    for block in args.blocks:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(wav), str(block)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(f"block {block}: failed: {proc.stderr[-1500:]}", file=sys.stderr)
            continue
        rows.append((block, json.loads(proc.stdout.strip().splitlines()[-1])))
    seconds = args.minutes * 60
    header = ["minutes", "block_seconds", "overlap (s)", "seconds", "real-time factor"]
    cells = [
        [
            args.minutes,
            f"{block:g}",
            f"{r['overlap'] / SR:.2f}",
            f"{r['seconds']:.1f}",
            f"{r['seconds'] / seconds:.4f}",
            f"{r['rss_mb']:.0f}",
        ]
        for block, r in rows
    ]
    print(markdown_table([*header, "peak RSS (MB)"], cells, right=range(6)))
    short = make_input(args.check_minutes, args.shared)
    dev = deviation_db(short, 20.0)
    print(
        f"\nblocks of 20 s vs whole-file apply on {args.check_minutes} min: "
        f"relative error energy {dev:.1f} dB"
    )


if __name__ == "__main__":
    main()
