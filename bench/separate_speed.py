"""Separation throughput and memory: real-time factor and peak RSS per engine and input length.

    .venv/bin/python bench/separate_speed.py                 # spleeter 10 and 60 min, repet 10 min
    .venv/bin/python bench/separate_speed.py --engines spleeter --minutes 10 60
    # Spleeter's options on one given WAV (wall, CPU seconds, RTF, peak RSS per variant):
    .venv/bin/python bench/separate_speed.py --input IN.wav \
        --variant runtime=tensorflow --variant runtime=tensorflow,intra=2,inter=1,chunk=60 \
        --variant runtime=onnx,onnx=U-NETS.onnx --compare

Each run is a fresh child process (so its peak RSS is its own): it loads the engine once,
separates one 44.1 kHz stereo WAV of speech over music, and reports load time, separation time
and ``ru_maxrss``. Inputs are made once under bench/out/ from ../shared (LibriSpeech + MUSAN
music), or from the demo's generated speech and music when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import os
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


def parse_variant(text: str) -> dict[str, str]:
    """``key=value,key=value``: runtime (tensorflow | tf-frozen | onnx), intra, inter
    (TensorFlow session threads; onnxruntime's intra-op threads), chunk (seconds), onnx (the
    exported U-Nets), fft (scipy FFT workers, onnx), spin=0 (onnxruntime's threads do not
    spin), env:NAME (an environment variable of the child)."""
    out = {"runtime": "tensorflow"}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out


def variant_child(variant: dict[str, str], wav: Path, out_dir: Path) -> None:
    """Runs in the child process: load one Spleeter variant, separate ``wav`` into
    ``out_dir``, print one JSON line (load, wall and CPU seconds of the separation, peak RSS)."""
    started = time.perf_counter()
    chunk = float(variant.get("chunk", 30))
    intra = int(variant.get("intra", 0))
    inter = int(variant["inter"]) if "inter" in variant else None
    if variant["runtime"] == "onnx":
        from eval.spleeter_onnx import OnnxSpleeter

        eng = OnnxSpleeter(
            Path(variant["onnx"]),
            chunk,
            threads=intra,
            fft_workers=int(variant.get("fft", 1)),
            spin=variant.get("spin", "1") != "0",
        )
    elif variant["runtime"] == "tf-frozen":
        from eval.spleeter_onnx import FrozenTFSpleeter
        from malmoi.models import ModelStore

        eng = FrozenTFSpleeter(ModelStore.from_config(None).path("spleeter:2stems"), chunk, intra)
    else:
        from malmoi.models import ModelStore
        from separate.spleeter import SpleeterEngine

        model_dir = ModelStore.from_config(None).path("spleeter:2stems")
        eng = SpleeterEngine(model_dir, chunk, threads=intra, inter_threads=inter)
    loaded = time.perf_counter()
    cpu0 = time.process_time()
    out_dir.mkdir(parents=True, exist_ok=True)
    eng.separate_file(wav, out_dir / "vocals.wav", out_dir / "accompaniment.wav")
    cpu = time.process_time() - cpu0
    done = time.perf_counter()
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        json.dumps(
            {
                "load_s": loaded - started,
                "separate_s": done - loaded,
                "cpu_s": cpu,
                "rss_gb": rss_gb,
            }
        )
    )


def compare_stems(ref: Path, other: Path, block: int = 1 << 20) -> dict[str, tuple[float, float]]:
    """Per stem: the largest absolute sample difference and the SNR (dB) of ``other``'s stem
    against ``ref``'s, over all channels, read block by block."""
    import soundfile as sf

    out = {}
    for stem in ("vocals", "accompaniment"):
        with (
            sf.SoundFile(str(ref / f"{stem}.wav")) as fa,
            sf.SoundFile(str(other / f"{stem}.wav")) as fb,
        ):
            if (fa.frames, fa.channels) != (fb.frames, fb.channels):
                raise ValueError(f"{stem}: {fa.frames}x{fa.channels} vs {fb.frames}x{fb.channels}")
            signal = noise = 0.0
            peak = 0.0
            while True:
                a = fa.read(block, dtype="float64")
                if not len(a):
                    break
                b = fb.read(block, dtype="float64")
                signal += float(np.sum(a * a))
                noise += float(np.sum((a - b) ** 2))
                peak = max(peak, float(np.max(np.abs(a - b))))
        out[stem] = (peak, 10 * np.log10(signal / noise) if noise > 0 else float("inf"))
    return out


def run_variants(args: argparse.Namespace) -> None:
    """Each ``--variant`` in its own child process on ``--input``; ``--compare``: each one's
    stems against the first variant's."""
    import soundfile as sf

    wav = args.input.resolve()
    seconds = sf.info(str(wav)).frames / sf.info(str(wav)).samplerate
    header = ["variant", "load (s)", "wall (s)", "CPU (s)", "CPU %", "RTF", "peak RSS (GB)"]
    if args.compare:
        header += ["vocals max abs diff", "vocals SNR (dB)", "acc. max abs diff", "acc. SNR (dB)"]
    cells = []
    dirs = []
    for i, text in enumerate(args.variant):
        variant = parse_variant(text)
        out_dir = OUT / "variants" / str(i)
        dirs.append(out_dir)
        env = dict(os.environ)
        env.update({k[4:]: v for k, v in variant.items() if k.startswith("env:")})
        cmd = [sys.executable, __file__, "--variant-child", json.dumps(variant), str(wav)]
        cmd += ["--out-dir", str(out_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            cells.append([text, "failed"] + [""] * (len(header) - 2))
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        row = [
            text,
            f"{r['load_s']:.1f}",
            f"{r['separate_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            f"{100 * r['cpu_s'] / r['separate_s']:.0f}%",
            f"{r['separate_s'] / seconds:.4f}",
            f"{r['rss_gb']:.2f}",
        ]
        if args.compare:
            if i == 0:
                row += ["(reference)", "", "", ""]
            else:
                d = compare_stems(dirs[0], out_dir)
                for stem in ("vocals", "accompaniment"):
                    row += [f"{d[stem][0]:.2e}", f"{d[stem][1]:.1f}"]
        cells.append(row)
        print(" | ".join(row), file=sys.stderr, flush=True)
    print(f"input: {wav.name}, {seconds / 60:.1f} min; load average {os.getloadavg()}")
    print(markdown_table(header, cells, right=range(1, len(header))))


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
    ap.add_argument("--input", type=Path, help="a 44.1 kHz WAV for --variant runs")
    ap.add_argument("--variant", action="append", default=[], help="see parse_variant")
    ap.add_argument("--compare", action="store_true", help="stems against the first variant's")
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "WAV"), help=argparse.SUPPRESS)
    ap.add_argument("--variant-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant_child:
        variant_child(json.loads(args.variant_child[0]), Path(args.variant_child[1]), args.out_dir)
        return
    if args.variant:
        if args.input is None:
            ap.error("--variant needs --input")
        run_variants(args)
        return
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
