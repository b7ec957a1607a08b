"""The whole pipeline's speed: `malmoi build` on a radio-like mp3, per stage and end to end.

    .venv/bin/python bench/pipeline_speed.py                 # 60-minute input
    .venv/bin/python bench/pipeline_speed.py --minutes 5     # a quick run
    .venv/bin/python bench/pipeline_speed.py --keep          # keep the build's folder

The input is made once (cached under bench/out/pipeline_input/, keyed by minutes and seed) from
../shared: four LibriSpeech speakers (2 M, 2 F) taking turns of a few utterances, a MUSAN music
bed 12-15 dB under a third of the turns, music interludes of 10-30 s every few minutes and
silences of 1-5 s, 44.1 kHz stereo, encoded to a 128 kb/s mp3 as crawled; a ground-truth csv
beside it says who speaks when and where the music is.

The build is the real CLI (``python -m malmoi build CONFIG``) in a fresh process with a
brand-new PREFECT_HOME, every stage configured: ingest, separate (Spleeter), segment (embedding
gender, any), speaker_filter (3 clean utterances of one of the mixed speakers not in the mix),
denoise, transcribe (whisper:base; the speech is English, so decoded as English), export. The
process tree is sampled every 0.2 s (psutil: RSS summed over the tree, CPU times of the tree)
and stage boundaries are read from the build's log as it streams: the first
stage starts at the flow's "building NAME into DIR" line, each stage ends at its summary line
("separate: 1 processed, 0 skipped ..."), the next one starts there. Models are fetched before
the clock starts (not timed). Prints a markdown table and writes it with a JSON to
bench/out/pipeline_speed-<minutes>m.{md,json}; exits 1 when the build fails.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from eval.common import markdown_table  # noqa: E402
from malmoi import registry  # noqa: E402

OUT = REPO / "bench" / "out"
SR = 44100
SPEAKERS = {"3005": "M", "2609": "M", "3331": "F", "367": "F"}  # LibriSpeech test-other
TARGET = "3005"  # the speaker filter's target; its utterances 0-2 are the references
REFERENCES = 3
SPEECH_RMS = 0.08  # about -22 dBFS
MUSIC_BED_DB = (-15.0, -12.0)  # bed level relative to the speech
INTERLUDE_SECONDS = (10.0, 30.0)
INTERLUDE_EVERY = (120.0, 300.0)  # seconds of programme between two interludes
SILENCE_SECONDS = (1.0, 5.0)
SILENCE_SHARE = 0.4  # of the gaps between turns (the others are 0.3-0.8 s pauses)
BED_EVERY = 3  # one turn in three has the music bed
STAGES = tuple(registry.STAGES)  # the pipeline's stages, in order
SAMPLE_SECONDS = 0.2


# --- the input -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One line of the ground truth: ``kind`` is speech, music_bed, interlude or silence."""

    kind: str
    start: float
    stop: float
    speaker: str = ""
    gender: str = ""
    detail: str = ""


def utterance_files(shared: Path, speaker: str) -> list[Path]:
    """The 10 LibriSpeech test-other utterances of ``speaker`` in ../shared, sorted."""
    return sorted((shared / "data" / "librispeech" / "utterances" / speaker).glob("*.flac"))


def reference_files(shared: Path) -> list[Path]:
    """The target's clean clips for the speaker filter: utterances the mix never uses."""
    return utterance_files(shared, TARGET)[:REFERENCES]


def _level(x: np.ndarray, rms: float) -> np.ndarray:
    return (x * (rms / max(float(np.sqrt(np.mean(x**2))), 1e-9))).astype(np.float32)


def _fade(x: np.ndarray, seconds: float = 0.5) -> np.ndarray:
    n = min(int(seconds * SR), len(x) // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


class Sources:
    """The decoded material: speakers' utterances (mono), music (stereo), all at 44.1 kHz."""

    def __init__(self, shared: Path):
        from malmoi.audio import read_audio

        self.utterances: dict[str, list[tuple[str, np.ndarray]]] = {}
        for speaker in SPEAKERS:
            files = utterance_files(shared, speaker)
            if len(files) < REFERENCES + 3:
                sys.exit(f"need LibriSpeech utterances of speaker {speaker} under {shared}")
            if speaker == TARGET:
                files = files[REFERENCES:]
            self.utterances[speaker] = [
                (f.stem, _level(read_audio(f, SR), SPEECH_RMS)) for f in files
            ]
        musan = read_audio(shared / "data" / "ina" / "musanmix.wav", SR)[: int(22.48 * SR)]
        self.bed = _level(np.stack([musan, 0.95 * musan], axis=1), SPEECH_RMS)
        song = read_audio(shared / "data" / "music" / "audio_example.mp3", SR, mono=False)
        song = song if song.ndim == 2 and song.shape[1] == 2 else np.repeat(song[:, None], 2, 1)
        # interludes: the song, then the MUSAN music, looped (music at speech level)
        self.interlude = np.concatenate([_level(song, SPEECH_RMS), self.bed])

    @staticmethod
    def looped(music: np.ndarray, start: int, n: int) -> np.ndarray:
        """``n`` frames of ``music`` (looped) from frame ``start``."""
        idx = (start + np.arange(n)) % len(music)
        return music[idx]


@functools.cache
def load_sources(shared: Path) -> Sources:
    """The decoded material of ``shared``, decoded once per process."""
    return Sources(shared)


def plan(minutes: float, seed: int, sources: Sources) -> Iterator[tuple[Span, np.ndarray]]:
    """The programme, block by block: each block's ground-truth spans and its stereo audio
    (float32), in order; the blocks add up to more than ``minutes`` (the writer cuts)."""
    rng = np.random.default_rng(seed)
    total = minutes * 60.0
    every_cap, interlude_cap = max(total / 3, 5.0), max(total / 6, 3.0)
    next_interlude = min(rng.uniform(*INTERLUDE_EVERY), every_cap)
    order = {s: list(rng.permutation(len(u))) for s, u in sources.utterances.items()}
    pan = {s: (1.0, 0.85) if i % 2 else (0.85, 1.0) for i, s in enumerate(SPEAKERS)}
    t, turn, speaker = 0.0, 0, ""
    while True:
        if t >= next_interlude:
            seconds = min(rng.uniform(*INTERLUDE_SECONDS), interlude_cap)
            n = int(seconds * SR)
            start = int(rng.integers(0, len(sources.interlude)))
            audio = _fade(sources.looped(sources.interlude, start, n).copy())
            yield Span("interlude", t, t + n / SR, detail="audio_example + MUSAN music"), audio
            t += n / SR
            next_interlude = t + min(rng.uniform(*INTERLUDE_EVERY), every_cap)
        speaker = str(rng.choice([s for s in SPEAKERS if s != speaker]))
        parts: list[np.ndarray] = []
        spans: list[Span] = []
        at = t
        for k in range(int(rng.integers(2, 5))):
            if k:
                pause = np.zeros(int(rng.uniform(0.2, 0.6) * SR), np.float32)
                parts.append(pause)
                at += len(pause) / SR
            if not order[speaker]:
                order[speaker] = list(rng.permutation(len(sources.utterances[speaker])))
            name, wav = sources.utterances[speaker][order[speaker].pop()]
            parts.append(wav)
            spans.append(Span("speech", at, at + len(wav) / SR, speaker, SPEAKERS[speaker], name))
            at += len(wav) / SR
        mono = np.concatenate(parts)
        audio = np.stack([mono * pan[speaker][0], mono * pan[speaker][1]], axis=1)
        if turn % BED_EVERY == 1:
            gain_db = rng.uniform(*MUSIC_BED_DB)
            start = int(rng.integers(0, len(sources.bed)))
            bed = sources.looped(sources.bed, start, len(audio)) * 10 ** (gain_db / 20)
            audio = audio + _fade(bed.astype(np.float32), 0.3)
            spans.insert(0, Span("music_bed", t, at, detail=f"{gain_db:.1f} dB"))
        for i, span in enumerate(spans):
            yield span, audio if i == 0 else np.zeros((0, 2), np.float32)
        t = at
        turn += 1
        silent = turn == 1 or rng.random() < SILENCE_SHARE
        seconds = rng.uniform(*SILENCE_SECONDS) if silent else rng.uniform(0.3, 0.8)
        gap = np.zeros((int(seconds * SR), 2), np.float32)
        if silent:
            yield Span("silence", t, t + len(gap) / SR), gap
        else:
            yield Span("pause", t, t + len(gap) / SR), gap
        t += len(gap) / SR


def input_paths(minutes: float, seed: int, folder: Path | None = None) -> tuple[Path, Path]:
    """Where the input mp3 of ``minutes`` and ``seed`` and its ground-truth csv are cached
    (``folder``, default bench/out/pipeline_input)."""
    stem = (folder or OUT / "pipeline_input") / f"radio-{minutes:g}m-seed{seed}"
    return stem.with_suffix(".mp3"), stem.with_suffix(".truth.csv")


def make_input(
    minutes: float, seed: int, shared: Path, folder: Path | None = None
) -> tuple[Path, Path]:
    """The radio-like mp3 of ``minutes`` (exactly, before mp3 padding) and its ground truth,
    made once and reused; written block by block through a 16-bit WAV, then ffmpeg (128k)."""
    mp3, truth = input_paths(minutes, seed, folder)
    if mp3.exists() and truth.exists():
        return mp3, truth
    import soundfile as sf

    mp3.parent.mkdir(parents=True, exist_ok=True)
    sources = load_sources(shared)
    limit = round(minutes * 60 * SR)
    wav = mp3.with_suffix(".tmp.wav")
    spans: list[Span] = []
    written = 0
    with sf.SoundFile(str(wav), "w", SR, 2, subtype="PCM_16", format="WAV") as fh:
        for span, audio in plan(minutes, seed, sources):
            end = limit / SR
            if span.start >= end:
                break
            if span.kind != "pause":
                spans.append(Span(**{**asdict(span), "stop": min(span.stop, end)}))
            take = audio[: limit - written]
            fh.write(np.clip(take, -0.99, 0.99))
            written += len(take)
        if written < limit:
            fh.write(np.zeros((limit - written, 2), np.float32))
    tmp = mp3.with_suffix(".tmp.mp3")
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "libmp3lame", "-b:a", "128k"]
    subprocess.run([*cmd, str(tmp)], check=True)
    wav.unlink()
    write_truth(truth, spans)
    tmp.rename(mp3)
    return mp3, truth


def write_truth(path: Path, spans: Iterable[Span]) -> None:
    """The ground truth as csv: kind, start, stop (seconds), speaker, gender, detail."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["kind", "start", "stop", "speaker", "gender", "detail"])
        for s in spans:
            writer.writerow(
                [s.kind, f"{s.start:.3f}", f"{s.stop:.3f}", s.speaker, s.gender, s.detail]
            )
    tmp.rename(path)


def read_truth(path: Path) -> list[Span]:
    """The spans of a ground-truth csv written by :func:`write_truth`."""
    with path.open(newline="") as fh:
        return [
            Span(
                r["kind"],
                float(r["start"]),
                float(r["stop"]),
                r["speaker"],
                r["gender"],
                r["detail"],
            )
            for r in csv.DictReader(fh)
        ]


# --- the config ----------------------------------------------------------------------------


def write_config(folder: Path, mp3: Path, shared: Path, overrides: Iterable[str] = ()) -> Path:
    """The pipeline YAML a new user writes, in ``folder``; returns its path. Every stage runs
    with its defaults; the config names only the source, the speaker filter's references and
    the transcribe stage's language (the bench's speech is English LibriSpeech: decoded as
    English and kept as such, the same work as Korean). ``overrides`` are ``SECTION.KEY=VALUE``
    (YAML values, e.g. ``segment.gender_engine=ina``) for the other engines and settings."""
    import yaml

    config: dict = {
        "name": "bench",
        "output_dir": str(folder / "build"),
        "sources": [{"kind": "local", "paths": [str(mp3)]}],
        "speaker_filter": {"references": [str(p) for p in reference_files(shared)]},
        "transcribe": {"language": "en", "languages": ["en"]},
    }
    for override in overrides:
        dotted, sep, value = override.partition("=")
        if not sep or "." not in dotted:
            raise SystemExit(f"--set {override!r}: expected SECTION.KEY=VALUE")
        *path, key = dotted.split(".")
        node = config
        for part in path:
            node = node.setdefault(part, {})
        node[key] = yaml.safe_load(value)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- reading the build's log ---------------------------------------------------------------

START = re.compile(r"building \S+ into \S+")
SUMMARY = re.compile(
    r"\b(?P<stage>" + "|".join(STAGES) + r"): (?P<processed>\d+) processed, "
    r"(?P<skipped>\d+) skipped \(done before\), (?P<failed>\d+) failed.*?; "
    r"(?P<kept>\d+) rows kept, (?P<rejected>\d+) rejected in (?P<seconds>[\d.]+) s"
)


@dataclass
class Boundaries:
    """Stage boundaries found in the log: when the flow started its first stage, and when
    (and with what counts) each stage ended, in seconds since the build process started."""

    start: float | None = None
    ends: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, float]] = field(default_factory=dict)

    def feed(self, line: str, at: float) -> None:
        """Take one log line that arrived ``at`` seconds after the start."""
        if self.start is None and START.search(line):
            self.start = at
            return
        m = SUMMARY.search(line)
        if m and m["stage"] not in self.ends:  # the flow repeats the line: keep the first
            self.ends[m["stage"]] = at
            self.counts[m["stage"]] = {
                k: float(v) if k == "seconds" else int(v)
                for k, v in m.groupdict().items()
                if k != "stage"
            }

    def windows(self) -> list[tuple[str, float, float]]:
        """(stage, start, end) in order: each stage starts where the one before ended."""
        out = []
        at = self.start
        for stage, end in sorted(self.ends.items(), key=lambda kv: kv[1]):
            if at is not None:
                out.append((stage, at, end))
            at = end
        return out


def parse_log(lines: Iterable[tuple[float, str]]) -> Boundaries:
    """Boundaries from (seconds since start, line) pairs."""
    found = Boundaries()
    for at, line in lines:
        found.feed(line, at)
    return found


# --- sampling the process tree -------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the build started
    cpu: float  # user + system seconds of the tree, waited-for children included
    rss: int  # bytes, summed over the tree


def sample_tree(pid: int) -> tuple[float, int] | None:
    """CPU seconds and RSS of ``pid`` and all its descendants (None once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    cpu, rss = 0.0, 0
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
            rss += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return cpu, rss


def cpu_at(samples: list[Sample], at: float) -> float:
    """The tree's CPU seconds at ``at``, linearly between the samples around it."""
    times = [s.at for s in samples]
    return float(np.interp(at, times, np.maximum.accumulate([s.cpu for s in samples])))


def peak_rss(samples: list[Sample], start: float, end: float) -> int:
    """The largest tree RSS sampled within [start, end] (or the nearest sample)."""
    inside = [s.rss for s in samples if start <= s.at <= end]
    if inside:
        return max(inside)
    return min(samples, key=lambda s: abs(s.at - (start + end) / 2)).rss


# --- the run -------------------------------------------------------------------------------


@dataclass
class Run:
    ok: bool
    wall: float
    cpu_rusage: float  # user + system of the child and every descendant it waited for
    boundaries: Boundaries
    samples: list[Sample]
    log: Path


def run_build(
    config: Path, folder: Path, model_dir: Path | None, log_name: str = "build.log"
) -> Run:
    """``malmoi build CONFIG`` in a fresh process in ``folder`` with a brand-new PREFECT_HOME,
    sampled every 0.2 s; its output goes to ``folder / log_name``."""
    prefect_home = Path(tempfile.mkdtemp(prefix="malmoi-bench-prefect-"))
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    env.pop("PREFECT_API_URL", None)
    if model_dir is not None:
        env["MALMOI_MODEL_DIR"] = str(model_dir)
    log_path = folder / log_name
    found = Boundaries()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "malmoi", "build", str(config)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )

    def read() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                at = time.perf_counter() - started
                log.write(f"{at:9.2f} {line}")
                log.flush()
                found.feed(line, at)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    samples: list[Sample] = [Sample(0.0, 0.0, 0)]
    while proc.poll() is None:
        got = sample_tree(proc.pid)
        if got is not None:
            samples.append(Sample(time.perf_counter() - started, *got))
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - started
    reader.join(timeout=10)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    samples.append(Sample(wall, max(cpu, samples[-1].cpu), samples[-1].rss))
    shutil.rmtree(prefect_home, ignore_errors=True)
    return Run(proc.returncode == 0, wall, cpu, found, samples, log_path)


# --- the table -----------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    wall: float
    cpu: float
    rss: int
    work: str = ""


def rows_of(run: Run) -> list[Row]:
    """Startup, each stage found in the log, the tail after the last stage, and end to end."""
    s, b = run.samples, run.boundaries
    rows = []
    first = b.start if b.start is not None else run.wall
    rows.append(
        Row("startup (imports, Prefect server)", first, cpu_at(s, first), peak_rss(s, 0, first))
    )
    last = first
    for stage, start, end in b.windows():
        c = b.counts[stage]
        work = (
            f"{c['processed']} processed, {c['kept']} kept, {c['rejected']} rejected"
            + (f", {c['failed']} failed" if c["failed"] else "")
            + f" (stage.run {c['seconds']:.1f} s)"
        )
        cpu = cpu_at(s, end) - cpu_at(s, start)
        rows.append(Row(stage, end - start, cpu, peak_rss(s, start, end), work))
        last = end
    rows.append(
        Row(
            "after the last stage (flow end, shutdown)",
            run.wall - last,
            run.cpu_rusage - cpu_at(s, last),
            peak_rss(s, last, run.wall),
        )
    )
    rows.append(Row("end-to-end", run.wall, run.cpu_rusage, max(x.rss for x in s)))
    return rows


def table(rows: list[Row], audio_seconds: float, cores: int) -> str:
    """The markdown table: wall, RTF, × real time, CPU, peak RSS and the work of each row."""
    header = ["step", "wall (s)", "RTF", "× real time", "CPU (s)", f"CPU (% of {100 * cores}%)"]
    header += ["cores busy", "peak RSS (GB)", "work"]
    cells = []
    for r in rows:
        speed = audio_seconds / r.wall if r.wall > 0 else float("inf")
        share = 100 * r.cpu / r.wall if r.wall > 0 else 0.0
        name = f"**{r.name}**" if r.name == "end-to-end" else r.name
        cells.append(
            [
                name,
                f"{r.wall:.1f}",
                f"{r.wall / audio_seconds:.3f}",
                f"{speed:.1f}×",
                f"{r.cpu:.1f}",
                f"{share:.0f}%",
                f"{share / 100 / cores * 100:.0f}%",
                f"{r.rss / 2**30:.2f}",
                r.work,
            ]
        )
    return markdown_table(header, cells, right=range(1, 8))


def rerun_table(first: Run, rerun: Run) -> str:
    """The first build's and the no-change rerun's wall time, the rerun as a share of it."""
    return markdown_table(
        ["run", "wall (s)", "share of the first"],
        [
            ["first build", f"{first.wall:.1f}", "100.0%"],
            ["rerun, nothing changed", f"{rerun.wall:.1f}", f"{rerun.wall / first.wall:.1%}"],
        ],
        right=(1, 2),
    )


def truth_summary(spans: list[Span]) -> str:
    """One line: seconds of speech per speaker, music bed, interludes and silences."""
    by: dict[str, float] = {}
    for s in spans:
        key = f"{s.speaker} ({s.gender})" if s.kind == "speech" else s.kind
        by[key] = by.get(key, 0.0) + s.stop - s.start
    return ", ".join(f"{k} {v:.0f} s" for k, v in sorted(by.items()))


def fetch_models(model_dir: Path | None) -> None:
    """Make sure the models the build needs are in the store (not timed)."""
    env = {**os.environ}
    if model_dir is not None:
        env["MALMOI_MODEL_DIR"] = str(model_dir)
    names = [
        "spleeter:2stems",
        "ina:speech-music-noise",
        "ina:gender",
        "dnsmos:p835",
        "whisper:base",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "malmoi", "models", "fetch", *names],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"malmoi models fetch failed:\n{proc.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="input length (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="the input's seed")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--out", type=Path, help="run folder (default bench/out/pipeline_run-<m>m)")
    ap.add_argument("--keep", action="store_true", help="keep the run folder (GBs for 60 min)")
    ap.add_argument("--model-dir", type=Path, help="MALMOI_MODEL_DIR for the build")
    ap.add_argument(
        "--no-rerun",
        dest="rerun",
        action="store_false",
        help="skip the second build with nothing changed (timed against the first)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change the default config, e.g. --set segment.gender_engine=ina (repeatable)",
    )
    args = ap.parse_args()
    if not (args.shared / "data").is_dir():
        sys.exit(f"no shared data at {args.shared} (--shared)")

    t = time.perf_counter()
    mp3, truth = make_input(args.minutes, args.seed, args.shared)
    from malmoi.audio import probe

    audio_seconds = float(probe(mp3).duration or args.minutes * 60)
    print(f"input: {mp3} ({audio_seconds:.1f} s; ready in {time.perf_counter() - t:.1f} s)")
    print(f"ground truth: {truth}: {truth_summary(read_truth(truth))}")
    fetch_models(args.model_dir)

    folder = (args.out or OUT / f"pipeline_run-{args.minutes:g}m").absolute()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = write_config(folder, mp3, args.shared, args.set)
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    print(f"building {config} (log: {folder / 'build.log'}) ...", flush=True)
    run = run_build(config, folder, args.model_dir)
    load_after = os.getloadavg()
    if not run.ok:
        print(run.log.read_text()[-4000:], file=sys.stderr)
        sys.exit(f"malmoi build failed (log: {run.log})")

    rows = rows_of(run)
    text = table(rows, audio_seconds, cores)
    rerun = None
    if args.rerun:
        print("building it again, nothing changed ...", flush=True)
        rerun = run_build(config, folder, args.model_dir, "rerun.log")
        if not rerun.ok:
            print(rerun.log.read_text()[-4000:], file=sys.stderr)
            sys.exit(f"the rerun failed (log: {rerun.log})")
        text += "\n\n" + rerun_table(run, rerun)
    head = (
        f"`malmoi build` of a {audio_seconds / 60:.1f}-minute radio-like mp3 (seed {args.seed}), "
        f"{cores} cores, config: the defaults{''.join(' --set ' + o for o in args.set)}; "
        f"load average before {load_before[0]:.2f}, after (1/5/15 min) "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}\n"
    )
    note = (
        "\nRTF = wall / input audio seconds; CPU = user + system seconds of the build's process "
        "tree (end-to-end from the child's rusage, stages from 0.2-s psutil samples); peak RSS "
        "summed over the tree (sampled)."
    )
    print("\n" + head + "\n" + text + "\n" + note)
    stem = OUT / f"pipeline_speed-{args.minutes:g}m"
    OUT.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(head + "\n" + text + "\n" + note + "\n")
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "input": str(mp3),
                "audio_seconds": audio_seconds,
                "seed": args.seed,
                "set": args.set,
                "cores": cores,
                "load_before": load_before,
                "load_after": load_after,
                "wall": run.wall,
                "rerun_wall": None if rerun is None else rerun.wall,
                "cpu_rusage": run.cpu_rusage,
                "rows": [asdict(r) for r in rows],
                "counts": run.boundaries.counts,
                "windows": run.boundaries.windows(),
                # the 0.2-s samples: seconds since start, tree CPU seconds, tree RSS (MB)
                "samples": [[round(x.at, 2), round(x.cpu, 2), x.rss >> 20] for x in run.samples],
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwritten: {stem}.md, {stem}.json")
    if not args.keep:
        shutil.rmtree(folder / "build", ignore_errors=True)


if __name__ == "__main__":
    main()
