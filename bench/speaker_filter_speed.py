"""Speaker filter throughput and memory: slices per second and peak RSS of the stage.

    .venv/bin/python bench/speaker_filter_speed.py                  # 600 slices, 1 torch thread
    .venv/bin/python bench/speaker_filter_speed.py --threads 1 2    # also with 2 torch threads
    .venv/bin/python bench/speaker_filter_speed.py --slices 200 --modes cold

Inputs are made once under bench/out/speaker_slices/: N slices of 1.5-10 s (uniform lengths, like
the segment stage's slices) cut from the 120 LibriSpeech speakers of ../shared
(data/librispeech/speakers/*.flac) and, one slice in 20, from utterances 3-9 of the target
speaker 1688 (so the run keeps some), written as 16-kHz mono WAV; the references are
utterances 0-2 of 1688 (data/librispeech/utterances/1688/). Each run is a fresh child process (so
its peak RSS is its own) running ``SpeakerFilterStage`` on the slices with the stage's own code
path (``TimedStage`` only sets the torch threads and clocks the phases):

- ``cold``: empty stage folder; the Resemblyzer encoder is loaded, the profile built from the
  references, every slice embedded (batched) and cached, scored, the threshold picked and the
  manifests, threshold.json and scores.png written;
- ``rerun``: the same folder again, nothing changed: every slice is skipped (no embedding, the
  model should not even load), the partition redone from the cached embeddings;
- ``rescore``: the same folder with ``force`` (``malmoi speaker-filter --rescore``): every slice
  goes through the stage again, its embedding read from the cache (0 embedded).

Reported: slices, audio seconds, model load time, the rest of the run (profile, embedding,
scoring, partition, plot), slices/s and audio seconds per wall second over the whole child run
after imports (load included), and ``ru_maxrss``. Each run's phases are listed below the
table, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from eval.common import markdown_table  # noqa: E402

OUT = REPO / "bench" / "out"
SR = 16000
MIN_SECONDS, MAX_SECONDS = 1.5, 10.0
TARGET = "1688"
TARGET_EVERY = 20  # one slice in 20 is the target speaker's


def make_slices(count: int, shared: Path) -> tuple[Path, float]:
    """``count`` 16-kHz mono WAV slices of 1.5-10 s cut from the LibriSpeech speaker files
    (round-robin over speakers, random lengths and offsets, seed 0), in a folder of their own;
    returns the folder and the slices' total seconds. Made once: a finished folder holds
    ``slices.json``."""
    import soundfile as sf

    folder = OUT / "speaker_slices" / f"n{count}"
    done = folder / "slices.json"
    if done.exists():
        return folder, float(json.loads(done.read_text())["seconds"])
    sources = sorted((shared / "data" / "librispeech" / "speakers").glob("*.flac"))
    if not sources:
        sys.exit(f"no LibriSpeech speaker files under {shared}/data/librispeech/speakers")
    # every TARGET_EVERY-th slice is the target's (utterances the references are not), so the
    # run keeps some: the 120 speakers do not include the target
    target = utterances(shared)[3:]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    audio = {}
    rng = np.random.default_rng(0)
    total = 0
    for i in range(count):
        if i % TARGET_EVERY == TARGET_EVERY - 1:
            src = target[(i // TARGET_EVERY) % len(target)]
        else:
            src = sources[(i - i // TARGET_EVERY) % len(sources)]
        if src not in audio:
            wav, sr = sf.read(str(src), dtype="float32")
            assert sr == SR and wav.ndim == 1, src
            audio[src] = wav
        wav = audio[src]
        n = min(len(wav), round(rng.uniform(MIN_SECONDS, MAX_SECONDS) * SR))
        start = int(rng.integers(0, len(wav) - n + 1))
        speaker = src.name.split("-")[0]
        sf.write(str(folder / f"s{i:05d}-{speaker}.wav"), wav[start : start + n], SR, "PCM_16")
        total += n
    done.write_text(json.dumps({"slices": count, "seconds": total / SR}) + "\n")
    return folder, total / SR


def utterances(shared: Path) -> list[Path]:
    return sorted((shared / "data" / "librispeech" / "utterances" / TARGET).glob("*.flac"))


def references(shared: Path) -> list[Path]:
    refs = utterances(shared)[:3]
    if len(refs) < 3:
        sys.exit(f"need 3 reference clips of speaker {TARGET} under {shared}")
    return refs


def child(mode: str, slices: Path, out: Path, threads: int, shared: Path) -> None:
    """Runs in the child process: one stage run, one JSON line on stdout."""
    t0 = time.perf_counter()
    from ingest.local import discover
    from malmoi.config import SpeakerFilterConfig
    from malmoi.manifest import read_records
    from speaker_filter.stage import SpeakerFilterStage

    imported = time.perf_counter()
    times: dict[str, float] = {}

    def clocked(fn, name: str):
        """``fn``, adding its wall time to ``times[name]``."""

        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t

        return wrapper

    class TimedStage(SpeakerFilterStage):
        """The stage unchanged, but for the torch threads and a clock on each phase."""

        def _embedder(self):
            if self.embedder is None:
                from malmoi.embedding import Embedder

                t = time.perf_counter()
                self.embedder = Embedder(threads=threads)
                times["load"] = time.perf_counter() - t
                for name in ("preprocess", "speech", "_mels", "embed_preprocessed", "embed_frames"):
                    setattr(self.embedder, name, clocked(getattr(self.embedder, name), name))
            return self.embedder

        def setup(self) -> None:
            t = time.perf_counter()
            super().setup()
            times["setup"] = time.perf_counter() - t

        def prepare(self, items) -> None:
            t = time.perf_counter()
            super().prepare(items)
            times["prepare"] = time.perf_counter() - t

        def _prefetch(self, items) -> None:
            t = time.perf_counter()
            super()._prefetch(items)
            times["embed"] = time.perf_counter() - t

        def after_run(self, report) -> None:
            t = time.perf_counter()
            super().after_run(report)
            times["after_run"] = time.perf_counter() - t

    params = SpeakerFilterConfig(references=references(shared), profile=None)
    stage = TimedStage(params, out)
    items = list(discover([slices], ["wav"]))
    started = time.perf_counter()
    report = stage.run(items, force=mode == "rescore")
    done = time.perf_counter()
    kept_target = sum(
        Path(r["source"]).stem.endswith(f"-{TARGET}") for r in read_records(out / "manifest.csv")
    )
    print(
        json.dumps(
            {
                "import_s": imported - t0,
                "run_s": done - started,
                "times": times,
                "model_loaded": stage.embedder is not None,
                "embedded": stage.embedded,
                "processed": report.processed,
                "skipped": report.skipped,
                "failed": report.failed,
                "kept": report.kept,
                "kept_target": kept_target,
                "rejected": report.rejected,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--threads", nargs="+", type=int, default=[1], help="torch threads per run")
    ap.add_argument("--modes", nargs="+", default=["cold", "rerun", "rescore"])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SLICES", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, slices, out = args.child
        child(mode, Path(slices), Path(out), args.threads[0], args.shared)
        return

    slices, seconds = make_slices(args.slices, args.shared)
    rows = []
    for threads in args.threads:
        out = OUT / "speaker_filter_runs" / f"n{args.slices}_t{threads}"
        for mode in args.modes:
            if mode == "cold" and out.exists():
                shutil.rmtree(out)
            cmd = [sys.executable, __file__, "--child", mode, str(slices), str(out)]
            cmd += ["--threads", str(threads), "--shared", str(args.shared)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{mode} t{threads}: failed: {proc.stderr[-2000:]}", file=sys.stderr)
                rows.append((mode, threads, None))
                continue
            rows.append((mode, threads, json.loads(proc.stdout.strip().splitlines()[-1])))

    print(
        f"{args.slices} slices, {seconds:.0f} s of audio ({seconds / args.slices:.2f} s mean), "
        f"1.5-10 s each, 16 kHz mono\n"
    )
    header = ["run", "torch threads", "slices", "audio (s)", "embedded", "model load (s)"]
    header += ["embed + score (s)", "slices/s", "audio s / wall s", "embedding alone: slices/s"]
    cells: list[list[object]] = []
    for mode, threads, r in rows:
        if r is None:
            cells.append([mode, threads, "failed", *[""] * 8])
            continue
        load = r["times"].get("load", 0.0)
        rest = r["run_s"] - load
        load_text = f"{load:.1f}" if r["model_loaded"] else "not loaded"
        embed = r["times"].get("embed", 0.0)
        alone = f"{r['embedded'] / embed:.1f}" if r["embedded"] and embed else "-"
        cells.append(
            [
                mode,
                threads,
                args.slices,
                f"{seconds:.0f}",
                r["embedded"],
                load_text,
                f"{rest:.1f}",
                f"{args.slices / r['run_s']:.1f}",
                f"{seconds / r['run_s']:.0f}",
                alone,
                f"{r['rss_mb']:.0f}",
            ]
        )
    print(markdown_table([*header, "peak RSS (MB)"], cells, right=range(1, 11)))
    print(
        "\nslices/s and audio s / wall s: over the whole stage run (model load included, "
        "Python imports not)."
    )
    for mode, threads, r in rows:
        if r is None:
            continue
        t = r["times"]
        parts = [f"imports {r['import_s']:.1f} s"]
        if "prepare" in t:  # the profile is built in prepare, before the batched embedding
            profile = t["prepare"] - t.get("load", 0.0) - t.get("embed", 0.0)
            parts.append(f"profile (3 refs + crops) {profile:.1f} s")
        if "embed" in t:
            parts.append(f"batched embedding {t['embed']:.1f} s")
        loop = r["run_s"] - t.get("prepare", 0.0) - t.get("setup", 0.0) - t.get("after_run", 0.0)
        parts.append(f"per-slice loop {loop:.1f} s")
        parts.append(f"threshold + partition + plot {t.get('after_run', 0.0):.1f} s")
        if "preprocess" in t or "speech" in t:
            lstm = t.get("embed_preprocessed", 0.0) - t.get("_mels", 0.0)
            vad = t.get("preprocess", 0.0) + t.get("speech", 0.0)
            parts.append(
                f"(all embedding, refs included: Resemblyzer preprocess/VAD {vad:.1f} s"
                f", mel partials {t.get('_mels', 0.0):.1f} s, LSTM {lstm:.1f} s, sliding "
                f"windows {t.get('embed_frames', 0.0):.1f} s)"
            )
        print(
            f"- {mode}, {threads} thread(s): {'; '.join(parts)}; processed {r['processed']}, "
            f"skipped {r['skipped']}, failed {r['failed']}, kept {r['kept']} "
            f"({r['kept_target']} of them the target's; the target has "
            f"{args.slices // TARGET_EVERY} slices)"
        )
    load = os.getloadavg()
    print(f"\nload average at the end (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
