"""Segmentation memory and speed on long inputs: chunked (the stage's way) vs whole-file.

    .venv/bin/python bench/segment_memory.py                  # 60 min, chunked and whole
    .venv/bin/python bench/segment_memory.py --minutes 10 --modes chunked

Each run is a fresh child process: it loads inaSpeechSegmenter (speech/music/noise and gender
CNNs from the model store) once, segments one 44.1 kHz WAV of LibriSpeech speech, MUSAN music
and silence, and reports its peak RSS; the parent compares the chunked labels with the
whole-file labels (20-ms frames) when both ran.
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
    path = OUT / f"speech_music_silence_{minutes}min.wav"
    if path.exists():
        return path
    from eval.separation import speech_track
    from malmoi.audio import read_audio

    speech = speech_track(shared, 150.0)
    music = read_audio(shared / "data/ina/musanmix.wav", SR)
    loop = np.concatenate([speech, np.zeros(3 * SR, np.float32), music]) * 0.8
    return write_looped(path, loop, minutes, SR)


def child(mode: str, wav: Path, out: Path) -> None:
    from malmoi.models import ModelStore
    from segment.ina import InaEngine

    store = ModelStore.from_config(None)
    vad = store.path("ina:speech-music-noise") / "keras_speech_music_noise_cnn.hdf5"
    gender = store.path("ina:gender") / "keras_male_female_cnn.hdf5"
    started = time.perf_counter()
    engine = InaEngine(vad, gender, chunk_seconds=300.0 if mode == "chunked" else 0.0)
    loaded = time.perf_counter()
    segments = engine.segment_file(wav)
    done = time.perf_counter()
    out.write_text(json.dumps([[s.label, s.start, s.stop] for s in segments]))
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        json.dumps(
            {
                "load_s": loaded - started,
                "segment_s": done - loaded,
                "rss_gb": rss_gb,
                "segments": len(segments),
            }
        )
    )


def track(segments: list, seconds: float) -> np.ndarray:
    lab = np.empty(int(seconds / 0.02), dtype=object)
    for label, start, stop in segments:
        lab[round(start / 0.02) : round(stop / 0.02)] = label
    return lab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--modes", nargs="+", default=["chunked", "whole"])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "WAV", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    wav = make_input(args.minutes, args.shared)
    results = {}
    for mode in args.modes:
        out = OUT / f"segments_{mode}_{args.minutes}min.json"
        proc = subprocess.run(
            [sys.executable, __file__, "--child", mode, str(wav), str(out)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(
                f"{mode}: failed (exit {proc.returncode}): {proc.stderr[-1500:]}", file=sys.stderr
            )
            continue
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        results[mode]["labels"] = json.loads(out.read_text())
    seconds = args.minutes * 60
    header = ["mode", "input", "load (s)", "segment (s)", "real-time factor", "peak RSS (GB)"]
    cells = [
        [
            mode,
            f"{args.minutes} min",
            f"{r['load_s']:.1f}",
            f"{r['segment_s']:.1f}",
            f"{r['segment_s'] / seconds:.3f}",
            f"{r['rss_gb']:.2f}",
            r["segments"],
        ]
        for mode, r in results.items()
    ]
    print(markdown_table([*header, "segments"], cells, right=range(1, 7)))
    if {"chunked", "whole"} <= results.keys():
        a = track(results["chunked"]["labels"], seconds)
        b = track(results["whole"]["labels"], seconds)
        print(f"\nchunked vs whole: {np.mean(a == b) * 100:.3f}% of 20-ms frames agree")


if __name__ == "__main__":
    main()
