"""Small runs: one new episode added to a build of hundreds, and a rerun with nothing new.

    .venv/bin/python bench/small_runs.py                        # 30-minute episode, 200 done
    .venv/bin/python bench/small_runs.py --minutes 5            # a quick run
    .venv/bin/python bench/small_runs.py --episodes 50 --keep   # keep bench/out/small_runs/

A daily crawl adds one episode to a build of hundreds: the work must follow what is new, not
the size of the build. Three builds, each the real CLI (``python -m malmoi build CONFIG``) in a
fresh process with a brand-new PREFECT_HOME (:func:`bench.pipeline_speed.run_build`), the
config of ``bench/pipeline_speed.py`` (every stage, speaker filter references, transcribe in
English) reading a folder of episodes:

(a) the new episode alone, in an empty build (``alone/``);
(b) the same episode added to a build of ``--episodes`` finished ones (``grown/``);
(c) ``malmoi build`` of (b)'s build again, nothing changed.

The criteria (issue 24): (b) ≤ 1.1 × (a), and (c) ≤ 2% of (a).

**What is synthetic.** The finished episodes are not processed one by one (200 × 3 minutes):
(a)'s build is the template. Every one of its rows, in every stage's ``manifest.csv``,
``rejected.csv`` and ``progress.csv``, is copied under each episode's id (the id ingest gives
``episodes/episode-NNN.mp3``, a hard link of the new episode's mp3), and each row's ``key`` is
computed again by the stage's own :meth:`~malmoi.stage.Stage.key` from the episode's id and its
input row's new key, stage after stage (the speaker filter's joined rows: from their members'
keys, as the stage does), so every stage's skip rule sees each episode as done with the
current config. The files the rows name (decoded WAV, stems, segments, slices, links) are hard
links of (a)'s; the files that record a key are written again with the new one (the segment
folder's ``embeddings.npz``, the speaker filter's per-slice ``embeddings/<id>.npz``). The audio
content is therefore the same in every episode; what the duplicate checks read of it is made
distinct, or export would reject 199 copies and `malmoi verify` fail the build: each dataset
WAV (``export/wavs/``) is a copy whose first sample is moved by the episode's number (16-bit
steps), the slices' sample hashes (``.dedup/hashes.json``) are those copies', the ingest rows'
``audio_sha256`` are made up, and each episode's Chromaprint fingerprint
(``.dedup/fingerprints/``) is random values of the template's length, stored as the check
stores what ``fpcalc`` computed. Then each stage's ``after_run`` runs once
over the copied folder (the real code: threshold, rules, duplicate check, the dataset's
metadata and card), so the folder-wide files are those of a build of that many episodes, the
script checks that every stage's :meth:`~malmoi.stage.Stage.pending` is 0 (the rule the
runs skip by), and verifies the dataset as the last build's verify step would (remembering
what each WAV decoded to), before the new episode is added. Prints markdown tables and
writes them to ``bench/out/small_runs-<minutes>m-<episodes>.md``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.pipeline_speed import (  # noqa: E402
    Run,
    fetch_models,
    make_input,
    run_build,
    write_config,
)
from eval.common import markdown_table  # noqa: E402

OUT = REPO / "bench" / "out"
TABLES = ("manifest.csv", "rejected.csv", "progress.csv", "failures.csv")
NEW = "new-episode"  # the new episode's file name (stem)


# --- the builds' folders -------------------------------------------------------------------


def episode_folder(folder: Path, mp3: Path, names: list[str]) -> Path:
    """``folder/episodes/`` with a hard link of ``mp3`` for each name (``<name>.mp3``)."""
    media = folder / "episodes"
    media.mkdir(parents=True, exist_ok=True)
    for name in names:
        dest = media / f"{name}.mp3"
        if not dest.exists():
            os.link(mp3, dest)
    return media


def make_config(folder: Path, media: Path, shared: Path) -> Path:
    """pipeline_speed's config (every stage) reading the episodes folder ``media``."""
    return write_config(folder, media, shared)


# --- copying a build's episode -------------------------------------------------------------


def _read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A stage table's header and rows (as written: no row left out)."""
    if not path.exists() or path.stat().st_size == 0:
        return [], []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _write_table(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


class Replicator:
    """Copies the one episode of a template build under other episodes' ids (see the module's
    docstring): rows with their keys computed again, files linked or rewritten."""

    def __init__(self, template: Path, template_source: Path, dest: Path, config: Path):
        from malmoi.config import load_config
        from malmoi.registry import input_of, specs

        self.template = template
        self.template_source = str(template_source)
        self.dest = dest
        self.cfg = load_config(config)
        self.specs = [s for s in specs() if s.used_by(self.cfg)]
        self.stages = {s.name: s.make(self.cfg) for s in self.specs}
        self.inputs = {s.name: input_of(self.cfg, s) for s in self.specs}
        self.tables: dict[str, dict[str, tuple[list[str], list[dict[str, str]]]]] = {}
        self.by_id: dict[str, dict[str, dict[str, str]]] = {}  # stage -> id -> row
        for s in self.specs:
            found = {t: _read_table(template / s.name / t) for t in TABLES}
            if found["failures.csv"][1]:
                raise SystemExit(f"the template's {s.name} stage has failures: not a template")
            self.tables[s.name] = found
            self.by_id[s.name] = {
                r["id"]: r for t in ("manifest.csv", "rejected.csv") for r in found[t][1]
            }
        roots = self.tables["ingest"]["manifest.csv"][1]
        if len(roots) != 1:
            raise SystemExit(f"the template has {len(roots)} ingested episodes, not one")
        self.root = roots[0]["id"]
        self.rows: dict[str, dict[str, list[dict[str, str]]]] = {
            s.name: {t: [] for t in TABLES} for s in self.specs
        }
        self.hashes: dict[str, str] = {}  # export's slice hashes, by slice key
        self.copies = 0  # episodes copied so far
        self.template_hashes = self._template_hashes()

    def _template_hashes(self) -> dict[str, str]:
        path = self.template / "export" / ".dedup" / "hashes.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def keys(self, episode_id: str, fingerprint: str) -> dict[str, str]:
        """Every key of the template mapped to the episode's, stage after stage."""
        from malmoi.ids import short_hash
        from malmoi.stage import Item

        keymap: dict[str, str] = {}
        for s in self.specs:
            stage, upstream = self.stages[s.name], self.inputs[s.name]
            for p in self.tables[s.name]["progress.csv"][1]:
                if upstream is None:
                    fp = fingerprint
                else:
                    fp = keymap[self.by_id[upstream][p["id"]]["key"]]
                item = Item(id=self.rename(p["id"], episode_id), path=Path(), source="",
                            fingerprint=fp)  # fmt: skip
                keymap[p["key"]] = stage.key(item)
            for row in self.by_id[s.name].values():
                if row["key"] in keymap:
                    continue
                if not row.get("joined"):
                    raise SystemExit(f"{s.name}: row {row['id']} has a key no item made")
                members = row["joined"].split()
                keymap[row["key"]] = short_hash(
                    " ".join(keymap[self.by_id[s.name][m]["key"]] for m in members)
                )
        return keymap

    def rename(self, text: str, episode_id: str, source: str = "") -> str:
        text = text.replace(self.root, episode_id)
        return text.replace(self.template_source, source) if source else text

    def add(self, media: Path) -> None:
        """Copy the template's episode as the episode of file ``media``."""
        from ingest.local import file_item

        item = file_item(media)
        eid, source = item.id, str(item.path)
        keymap = self.keys(eid, item.fingerprint)
        for s in self.specs:
            for table in ("manifest.csv", "rejected.csv", "progress.csv"):
                for row in self.tables[s.name][table][1]:
                    new = {c: self.rename(v, eid, source) for c, v in row.items()}
                    new["key"] = keymap[row["key"]]
                    if row.get("audio_sha256"):  # the duplicate check: another episode
                        new["audio_sha256"] = hashlib.sha256(
                            f"{eid}\0{row['audio_sha256']}".encode()
                        ).hexdigest()
                    self.rows[s.name][table].append(new)
        self.copies += 1
        self._files(eid, keymap)
        self._fingerprints(media, keymap)
        self._hashes(eid, keymap)

    def _hashes(self, eid: str, keymap: dict[str, str]) -> None:
        """The slices' sample hashes the duplicate check keeps, of the episode's own WAVs."""
        from malmoi.audio import pcm_sha256

        rows = {r["key"]: r for r in self.by_id.get("export", {}).values()}
        for old, sha in self.template_hashes.items():
            wav = (
                self.dest / "export" / self.rename(rows[old]["path"], eid) if old in rows else None
            )
            if wav is not None and wav.is_file():
                self.hashes[keymap[old]] = pcm_sha256(wav)
            else:
                self.hashes[keymap[old]] = hashlib.sha256(f"{eid}\0{sha}".encode()).hexdigest()

    def _files(self, eid: str, keymap: dict[str, str]) -> None:
        for folder, _, files in os.walk(self.template):
            rel_dir = Path(folder).relative_to(self.template)
            for name in files:
                rel = rel_dir / name
                if self.root not in str(rel):
                    continue
                dest = self.dest / self.rename(str(rel), eid)
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = self.template / rel
                if rel.parts[0] == "segment" and name == "embeddings.npz":
                    with np.load(src, allow_pickle=False) as z:
                        data = {k: z[k] for k in z.files}
                    data["ids"] = np.array([self.rename(str(i), eid) for i in data["ids"]])
                    data["key"] = np.array(keymap[str(data["key"])])
                    np.savez(dest, **data)
                elif rel.parts[:2] == ("export", "wavs"):  # the dataset: no two WAVs alike
                    self._distinct_wav(src, dest)
                elif rel.parts[0] == "speaker_filter" and rel.parts[1] == "embeddings":
                    with np.load(src, allow_pickle=False) as z:
                        data = {k: z[k] for k in z.files}
                    if "fingerprint" in data:
                        data["fingerprint"] = np.array(keymap[str(data["fingerprint"])])
                    np.savez(dest, **data)
                else:
                    os.link(src, dest)

    def _distinct_wav(self, src: Path, dest: Path) -> None:
        """A copy of a dataset WAV whose samples differ from every other copy's (its first
        sample moved by the copy's number, in 16-bit steps): `malmoi verify` and the
        duplicate check see another slice, as they would in another episode."""
        import soundfile as sf

        audio, rate = sf.read(str(src), dtype="int16", always_2d=True)
        first = int(audio[0, 0]) + self.copies
        audio[0, 0] = first if first <= 32767 else first - 65536
        sf.write(str(dest), audio, rate, subtype="PCM_16", format="WAV")

    def _fingerprints(self, media: Path, keymap: dict[str, str]) -> None:
        """The episode's Chromaprint fingerprints: random values, as long as the template's."""
        from export.dedup import media_key

        store = self.template / "export" / ".dedup" / "fingerprints"
        rng = np.random.default_rng(int(hashlib.sha256(str(media).encode()).hexdigest()[:8], 16))
        name = hashlib.sha256(media_key(Path(self.template_source)).encode()).hexdigest()[:24]
        pairs = [(name, media_key(media))]
        pairs += [
            (hashlib.sha256(f"slice\0{old}".encode()).hexdigest()[:24], f"slice\0{new}")
            for old, new in keymap.items()
        ]
        out = self.dest / "export" / ".dedup" / "fingerprints"
        out.mkdir(parents=True, exist_ok=True)
        for old_name, key in pairs:
            path = store / f"{old_name}.npy"
            if not path.is_file():
                continue
            n = len(np.load(path))
            fp = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
            np.save(out / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy", fp)

    def finish(self) -> None:
        """Write the tables and the stage folders' own files (config, record, profile…)."""
        for s in self.specs:
            folder = self.dest / s.name
            folder.mkdir(parents=True, exist_ok=True)
            for table in TABLES:
                header = self.tables[s.name][table][0]
                if header:
                    _write_table(folder / table, header, self.rows[s.name][table])
            for src in (self.template / s.name).iterdir():
                if src.is_file() and src.name not in TABLES and src.name != ".lock":
                    shutil.copy2(src, folder / src.name)
        for sub in ("plots",):
            if (self.template / "export" / sub).is_dir():
                shutil.copytree(self.template / "export" / sub, self.dest / "export" / sub,
                                dirs_exist_ok=True)  # fmt: skip
        dedup = self.dest / "export" / ".dedup"
        dedup.mkdir(parents=True, exist_ok=True)
        (dedup / "hashes.json").write_text(json.dumps(self.hashes, indent=0) + "\n")


def after_runs(config: Path) -> dict[str, float]:
    """Each stage's after-run work once over the copied folder (the real code, under the
    stage's lock); seconds each."""
    from malmoi.config import load_config
    from malmoi.registry import specs
    from malmoi.stage import StageReport, stage_lock

    cfg = load_config(config)
    took = {}
    for s in specs():
        if not s.used_by(cfg):
            continue
        stage = s.make(cfg)
        started = time.perf_counter()
        with stage_lock(stage.out_dir, s.name):
            stage.after_run(StageReport(stage=s.name))
        took[s.name] = time.perf_counter() - started
    return took


def pending_by_stage(config: Path) -> dict[str, int]:
    """Every stage's :meth:`Stage.pending` (the skip rule of the runs), each on its own."""
    from malmoi.config import load_config
    from malmoi.registry import specs

    cfg = load_config(config)
    return {
        s.name: s.make(cfg).pending(s.items(cfg), prune=s.prunes) for s in specs() if s.used_by(cfg)
    }


def grow(template: Path, template_source: Path, folder: Path, mp3: Path, shared: Path,
         episodes: int) -> Path:  # fmt: skip
    """``folder``: a build of ``episodes`` finished episodes copied from ``template``; its
    config (the new episode is not in its episodes folder yet)."""
    names = [f"episode-{k:03d}" for k in range(episodes)]
    media = episode_folder(folder, mp3, names)
    config = make_config(folder, media, shared)
    build = folder / "build"
    rep = Replicator(template, template_source, build, config)
    for name in names:
        rep.add(media / f"{name}.mp3")
    rep.finish()
    return config


# --- the runs ------------------------------------------------------------------------------


def stage_rows(run: Run) -> dict[str, tuple[float, float]]:
    """Per stage: (wall seconds in the log, seconds its stage.run reported)."""
    b = run.boundaries
    return {stage: (end - start, b.counts[stage]["seconds"]) for stage, start, end in b.windows()}


def checked(run: Run, what: str) -> Run:
    if not run.ok:
        print(run.log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"{what}: malmoi build failed (log: {run.log})")
    return run


def rows_count(build: Path) -> dict[str, tuple[int, int]]:
    """Rows in each stage folder: (manifest.csv, rejected.csv)."""
    from malmoi.manifest import read_records

    out = {}
    for folder in sorted(p for p in build.iterdir() if (p / "progress.csv").exists()):
        out[folder.name] = (
            len(read_records(folder / "manifest.csv")),
            len(read_records(folder / "rejected.csv")),
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="the episode's length")
    ap.add_argument("--episodes", type=int, default=200, help="finished episodes in the build")
    ap.add_argument("--seed", type=int, default=0, help="the episode's seed")
    ap.add_argument("--reruns", type=int, default=3, help="no-change reruns to time")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--keep", action="store_true", help="keep bench/out/small_runs/")
    ap.add_argument("--model-dir", type=Path, help="MALMOI_MODEL_DIR for the builds")
    args = ap.parse_args()
    if not (args.shared / "data").is_dir():
        sys.exit(f"no shared data at {args.shared} (--shared)")

    mp3, _ = make_input(args.minutes, args.seed, args.shared)
    fetch_models(args.model_dir)
    root = (OUT / "small_runs").absolute()
    shutil.rmtree(root, ignore_errors=True)
    cores = os.cpu_count() or 1
    load = [os.getloadavg()]

    alone = root / "alone"
    media = episode_folder(alone, mp3, [NEW])
    config_a = make_config(alone, media, args.shared)
    print(f"(a) the new episode alone: {config_a} ...", flush=True)
    a = checked(run_build(config_a, alone, args.model_dir), "(a)")
    load.append(os.getloadavg())

    grown = root / "grown"
    started = time.perf_counter()
    config_b = grow(alone / "build", media / f"{NEW}.mp3", grown, mp3, args.shared, args.episodes)
    copied = time.perf_counter() - started
    started = time.perf_counter()
    after = after_runs(config_b)
    todo = pending_by_stage(config_b)
    made = time.perf_counter() - started
    counts = rows_count(grown / "build")
    print(
        f"built {args.episodes} finished episodes in {copied:.0f} s, their after-run work in "
        f"{made:.0f} s ({', '.join(f'{k} {v:.1f} s' for k, v in after.items())}); pending "
        f"per stage: {todo}",
        flush=True,
    )
    if any(todo.values()):
        raise SystemExit(f"the copied build is not finished: {todo}")
    from export.verify import check

    verified = check(grown / "build" / "export", remember=True)  # as the last build's verify
    print(f"the copied build's dataset: {verified.summary()}", flush=True)
    if not verified.ok:
        raise SystemExit("the copied build's dataset does not verify")

    episode_folder(grown, mp3, [NEW])
    load.append(os.getloadavg())
    print(f"(b) the new episode added to {args.episodes}: {config_b} ...", flush=True)
    b = checked(run_build(config_b, grown, args.model_dir), "(b)")
    shutil.copy2(b.log, grown / "build-b.log")  # the reruns write build.log again
    load.append(os.getloadavg())
    reruns = []
    for i in range(args.reruns):
        print(f"(c) no-change rerun {i + 1} ...", flush=True)
        reruns.append(checked(run_build(config_b, grown, args.model_dir), "(c)"))
    load.append(os.getloadavg())
    c = statistics.median(r.wall for r in reruns)

    ratio = b.wall / a.wall
    share = c / a.wall
    head = (
        f"`malmoi build` with one new {args.minutes:g}-minute episode (seed {args.seed}); "
        f"{args.episodes} finished episodes of the same length in (b) and (c), "
        f"{sum(counts[s][0] + counts[s][1] for s in counts):,} rows in their stage tables "
        f"({', '.join(f'{s} {m + r:,}' for s, (m, r) in counts.items())}); {cores} cores; load "
        f"average (1 min) before each run: {', '.join(f'{x[0]:.2f}' for x in load)}\n"
    )
    runs_table = markdown_table(
        ["run", "wall (s)", "CPU (s)", "vs (a)", "criterion", "met"],
        [
            ["(a) the new episode alone, empty build", f"{a.wall:.1f}", f"{a.cpu_rusage:.1f}",
             "1.00×", "", ""],
            [f"(b) the new episode + {args.episodes} finished", f"{b.wall:.1f}",
             f"{b.cpu_rusage:.1f}", f"{ratio:.3f}×", "≤ 1.10×", "yes" if ratio <= 1.1 else "NO"],
            [f"(c) no-change rerun of (b)'s build (median of {len(reruns)}: "
             f"{', '.join(f'{r.wall:.2f}' for r in reruns)})", f"{c:.2f}",
             f"{statistics.median(r.cpu_rusage for r in reruns):.1f}", f"{100 * share:.1f}%",
             "≤ 2%", "yes" if share <= 0.02 else "NO"],
        ],
        right=(1, 2, 3),
    )  # fmt: skip
    sa, sb = stage_rows(a), stage_rows(b)
    stage_cells = []
    for stage in sa:
        wa, ra = sa[stage]
        wb, rb = sb.get(stage, (float("nan"), float("nan")))
        stage_cells.append(
            [stage, f"{wa:.1f}", f"{wb:.1f}", f"{wb - wa:+.1f}", f"{ra:.1f}", f"{rb:.1f}"]
        )
    ea = max(a.boundaries.ends.values(), default=a.wall)
    eb = max(b.boundaries.ends.values(), default=b.wall)
    tail = [a.wall - ea, b.wall - eb]
    stage_cells.append(["after the last stage (verify, flow end)", f"{tail[0]:.1f}",
                        f"{tail[1]:.1f}", f"{tail[1] - tail[0]:+.1f}", "", ""])  # fmt: skip
    ba, bb = a.boundaries.start or 0.0, b.boundaries.start or 0.0
    stage_cells.insert(0, ["startup (before the first stage)", f"{ba:.1f}", f"{bb:.1f}",
                           f"{bb - ba:+.1f}", "", ""])  # fmt: skip
    stages_table = markdown_table(
        ["stage", "(a) wall (s)", "(b) wall (s)", "(b) − (a)", "(a) stage.run (s)",
         "(b) stage.run (s)"],
        stage_cells,
        right=(1, 2, 3, 4, 5),
    )  # fmt: skip
    note = (
        f"\nThe finished episodes are copies of (a)'s build under other ids (made in "
        f"{copied:.0f} s, their after-run work {made:.0f} s; see the script's docstring for "
        "what is synthetic). Each run is the real CLI in a fresh process with a brand-new "
        "PREFECT_HOME; stage walls are read from the build's log (each stage ends at its "
        "summary line); (c) starts no flow when every stage is finished."
    )
    text = head + "\n" + runs_table + "\n\n" + stages_table + "\n" + note
    print("\n" + text)
    stem = OUT / f"small_runs-{args.minutes:g}m-{args.episodes}"
    stem.with_suffix(".md").write_text(text + "\n")
    print(f"\nwritten: {stem}.md")
    print("(c) said:", *reruns[0].log.read_text().splitlines()[-4:], sep="\n  ")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
