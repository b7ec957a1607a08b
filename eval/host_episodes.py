"""Issue 22's evaluation set: one host's voice out of a show whose guest has the same gender.

Each episode is a host (one of LibriSpeech test-other's 3331, 367, 1998 female; 3005, 2609,
1688 male) and a guest, built from ``../shared/data``:

- the host's utterances 3-9, each a turn; every inner pause of at least 0.15 s (see
  :func:`phrases`) becomes 0.7-1.0 s of quiet, as read speech pauses inside a sentence (where
  the segment stage used to cut one utterance in two);
- after each host turn, the guest: a full utterance (40 %) or a short answer (60 %: 1-2 s, a
  phrase of one of the guest's utterances cut at its pauses, like "네" or "맞아요");
- two callers (speakers of the host's gender from LibriSpeech's other 120 readers, 3-6 s each,
  band-passed to 300-3400 Hz like a phone line);
- music: 3-5-s interludes (MUSAN's music of ``ina/musanmix.wav``) at the start, in the middle and
  at the end, and a bed of the same music 15 dB under three turns (what separation leaves);
- pauses of 0.3-1.2 s between turns; every pause is a studio's quiet floor (-65 dBFS noise).

The references are the host's utterances 0-2 (not in the episode). The truth is who speaks when,
phrase by phrase (pauses count for nobody). An episode runs through the pipeline's separate
stage (Spleeter), segment stage and speaker filter, all with their default settings
(``SeparateConfig()``, ``SegmentConfig()``, ``SpeakerFilterConfig(references=...)``), and is
scored on time (``--no-separate``: segment the episode as it is, music beds and all):

- precision: host time / speech time in the kept slices;
- recall: host time in the kept slices / the host's time in the episode;
- segment coverage: the host's time inside the segment stage's slices / the host's time (it caps
  recall: a pause or a rejected short piece is in no slice);
- filter recall: host time kept / host time in the segment stage's slices (what the filter kept
  of what it could keep);
- kept slices and their median length (seconds; joins across pauses make them fewer and longer).

Cases: ``same`` (every host with each same-gender guest: 12 episodes) and ``mixed`` (every host
with one guest of the other gender: 6). Run: ``python -m eval.host_episodes [--case same|mixed|
all] [--work DIR] [--no-separate] [--segment KEY=VALUE] [--speaker KEY=VALUE] [--pair H-G]``;
the separate and segment stages' outputs are reused by later runs (their own resume), the
speaker filter runs again each time (its embeddings are cached)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from eval.common import markdown_table
from eval.episodes import EPISODE_SR, Turn, overlap_by_speaker, write_truth
from malmoi.audio import read_audio

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = Path(os.environ.get("MALMOI_SHARED", REPO.parent / "shared"))
FEMALE = ("3331", "367", "1998")
MALE = ("3005", "2609", "1688")
MIXED_GUEST = {"3331": "3005", "367": "2609", "1998": "1688", "3005": "367", "2609": "1998",
               "1688": "3331"}  # fmt: skip
N_REFS = 3
INNER_PAUSE = (0.7, 1.0)
TURN_GAP = (0.3, 1.2)
ANSWER = (1.0, 2.0)
P_ANSWER = 0.6
CALLER = (3.0, 6.0)
INTERLUDE = (3.0, 5.0)
BED_DB = 15.0
MUSIC = ("ina/musanmix.wav", 0.0, 22.48)
FRAME = 0.01
QUIET_SHARE = 0.3
FLOOR = 10 ** (-65 / 20)
MIN_PAUSE = 0.15
MIN_PHRASE = 0.5


def utterances(shared: Path, speaker: str) -> list[Path]:
    return sorted((shared / "data" / "librispeech" / "utterances" / speaker).glob("*.flac"))


def speaker_genders(shared: Path) -> dict[str, str]:
    out = {}
    for line in (shared / "data" / "librispeech" / "SPEAKERS.TXT").read_text().splitlines():
        if line.startswith(";"):
            continue
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 2:
            out[cells[0]] = cells[1]
    return out


def phrases(wav: np.ndarray, sr: int) -> list[tuple[int, int]]:
    """(start, stop) samples of the stretches of ``wav`` between its pauses: runs of at least
    0.15 s of 10-ms frames whose level (dB) is in the lowest 30 % of the range from the
    utterance's noise floor (10th percentile) to its speech (95th); leading and trailing silence
    is left out, and a phrase shorter than 0.5 s joins its neighbour."""
    hop = round(FRAME * sr)
    n = len(wav) // hop
    rms = np.sqrt(np.mean(wav[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    db = 20 * np.log10(rms + 1e-9)
    floor, peak = np.percentile(db, 10), np.percentile(db, 95)
    idx = np.flatnonzero(db > floor + QUIET_SHARE * (peak - floor))
    if not len(idx):
        return []
    out: list[list[int]] = [[int(idx[0]), int(idx[0]) + 1]]
    for i in idx[1:]:
        if i - out[-1][1] >= MIN_PAUSE / FRAME:
            out.append([int(i), int(i) + 1])
        else:
            out[-1][1] = int(i) + 1
    short = MIN_PHRASE / FRAME
    merged: list[list[int]] = []
    for p in out:
        if merged and (p[1] - p[0] < short or merged[-1][1] - merged[-1][0] < short):
            merged[-1][1] = p[1]
        else:
            merged.append(p)
    return [(a * hop, b * hop) for a, b in merged]


def bandpass(wav: np.ndarray, sr: int) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [300, 3400], btype="bandpass", fs=sr, output="sos")
    return sosfiltfilt(sos, wav).astype(np.float32)


@dataclass
class Episode:
    """One built episode: its audio file, the truth, the references and the host."""

    name: str
    host: str
    guest: str
    audio: Path
    truth: list[Turn]
    references: list[Path]


class Builder:
    """Appends pieces of audio and the truth of who speaks in them."""

    def __init__(self, sr: int, rng: np.random.Generator):
        self.sr, self.rng = sr, rng
        self.parts: list[np.ndarray] = []
        self.at = 0
        self.truth: list[Turn] = []

    def silence(self, lo: float, hi: float) -> None:
        """A pause of ``lo``-``hi`` seconds: a studio's quiet floor (white noise at -65 dBFS)."""
        n = round(float(self.rng.uniform(lo, hi)) * self.sr)
        self.add((self.rng.standard_normal(n) * FLOOR).astype(np.float32))

    def add(self, audio: np.ndarray, speaker: str | None = None, clip: str = "") -> None:
        if speaker is not None:
            self.truth.append(
                Turn(speaker, self.at / self.sr, (self.at + len(audio)) / self.sr, clip)
            )
        self.parts.append(audio.astype(np.float32))
        self.at += len(audio)

    def turn(self, wav: np.ndarray, speaker: str, clip: str, stretch: bool) -> None:
        """One speaker's turn: its phrases, the pauses between them kept (or stretched to
        0.7-1.0 s with ``stretch``)."""
        ps = phrases(wav, self.sr)
        for k, (a, b) in enumerate(ps):
            if k:
                if stretch:
                    self.silence(*INNER_PAUSE)
                else:
                    self.add(wav[ps[k - 1][1] : a])
            self.add(wav[a:b], speaker, f"{clip}#{k}")

    def audio(self) -> np.ndarray:
        return np.concatenate(self.parts)


def music_clip(shared: Path, seconds: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    path, lo, hi = MUSIC
    music = read_audio(shared / "data" / path, sr)[round(lo * sr) : round(hi * sr)]
    n = round(seconds * sr)
    if n >= len(music):  # a bed under a long turn: the piece looped
        music = np.resize(music, n + 1)
    start = int(rng.integers(0, len(music) - n))
    return music[start : start + n]


def answer(wav: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A 1-2 s short answer: the guest's phrases of that length (or the shortest phrase run
    that reaches 1 s, cut at 2 s)."""
    ps = phrases(wav, sr)
    fit = [(a, b) for a, b in ps if ANSWER[0] * sr <= b - a <= ANSWER[1] * sr]
    if fit:
        a, b = fit[int(rng.integers(len(fit)))]
        return wav[a:b]
    a = ps[0][0]
    return wav[a : a + round(float(rng.uniform(*ANSWER)) * sr)]


def build_episode(shared: Path, host: str, guest: str, folder: Path, seed: int) -> Episode:
    """Write ``folder/<host>-<guest>.wav`` and its truth CSV (see the module docstring)."""
    sr = EPISODE_SR
    rng = np.random.default_rng(seed)
    name = f"{host}-{guest}"
    host_clips = utterances(shared, host)
    guest_clips = utterances(shared, guest)
    genders = speaker_genders(shared)
    pool = sorted(
        p
        for p in (shared / "data" / "librispeech" / "speakers").glob("*.flac")
        if genders.get(p.name.split("-")[0]) == genders[host]
    )
    callers = [pool[int(i)] for i in rng.choice(len(pool), 2, replace=False)]
    b = Builder(sr, rng)
    music = lambda: music_clip(shared, float(rng.uniform(*INTERLUDE)), rng, sr)  # noqa: E731
    b.silence(0.5, 0.5)
    b.add(music())
    turns = host_clips[N_REFS:]
    bed = set(rng.choice(len(turns), 3, replace=False).tolist())
    order = rng.permutation(len(guest_clips))
    caller_at = {len(turns) // 3: callers[0], 2 * len(turns) // 3: callers[1]}
    for k, clip in enumerate(turns):
        b.silence(*TURN_GAP)
        wav = read_audio(clip, sr)
        first = len(b.parts)
        b.turn(wav, host, clip.name, stretch=True)
        if k in bed:  # a music bed under the whole turn (the truth keeps its times)
            speech = np.concatenate(b.parts[first:])
            m = music_clip(shared, len(speech) / sr + 0.1, rng, sr)[: len(speech)]
            gain = np.sqrt(np.mean(speech**2) / (np.mean(m**2) * 10 ** (BED_DB / 10)))
            b.parts[first:] = [(speech + gain * m).astype(np.float32)]
        b.silence(*TURN_GAP)
        g = read_audio(guest_clips[order[k % len(order)]], sr)
        if rng.random() < P_ANSWER:
            b.add(answer(g, sr, rng), guest, "answer")
        else:
            b.turn(g, guest, "guest", stretch=False)
        if k in caller_at:
            b.silence(*TURN_GAP)
            c = read_audio(caller_at[k], sr)
            ps = phrases(c, sr)
            a = ps[0][0]
            piece = c[a : a + round(float(rng.uniform(*CALLER)) * sr)]
            b.add(bandpass(piece, sr), "caller:" + caller_at[k].name.split("-")[0], "caller")
        if k == len(turns) // 2:
            b.silence(*TURN_GAP)
            b.add(music())
    b.silence(*TURN_GAP)
    b.add(music())
    b.silence(0.5, 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    audio = folder / f"{name}.wav"
    sf.write(str(audio), b.audio(), sr, subtype="PCM_16")
    write_truth(b.truth, folder / f"{name}.truth.csv")
    return Episode(name, host, guest, audio, b.truth, host_clips[:N_REFS])


def pairs(case: str) -> list[tuple[str, str]]:
    same = [(h, g) for group in (FEMALE, MALE) for h in group for g in group if g != h]
    mixed = list(MIXED_GUEST.items())
    return {"same": same, "mixed": mixed, "all": same + mixed}[case]


def seconds_of(rows: Sequence[dict[str, Any]], truth: Sequence[Turn], who: str) -> float:
    return sum(
        overlap_by_speaker(float(r["start"]), float(r["stop"]), truth).get(who, 0.0) for r in rows
    )


def speech_of(rows: Sequence[dict[str, Any]], truth: Sequence[Turn]) -> float:
    return sum(
        sum(overlap_by_speaker(float(r["start"]), float(r["stop"]), truth).values()) for r in rows
    )


@dataclass(frozen=True)
class PairScores:
    """Seconds behind the four figures of one episode."""

    name: str
    host_total: float
    host_sliced: float  # in the segment stage's kept slices
    host_kept: float  # in the speaker filter's kept slices
    speech_kept: float
    kept_seconds: tuple[float, ...] = ()  # the kept slices' durations

    @property
    def precision(self) -> float:
        return self.host_kept / self.speech_kept if self.speech_kept else 0.0

    @property
    def recall(self) -> float:
        return self.host_kept / self.host_total

    @property
    def coverage(self) -> float:
        return self.host_sliced / self.host_total

    @property
    def filter_recall(self) -> float:
        return self.host_kept / self.host_sliced if self.host_sliced else 0.0


def total(name: str, scores: Sequence[PairScores]) -> PairScores:
    return PairScores(
        name,
        sum(s.host_total for s in scores),
        sum(s.host_sliced for s in scores),
        sum(s.host_kept for s in scores),
        sum(s.speech_kept for s in scores),
        tuple(d for s in scores for d in s.kept_seconds),
    )


def run_episode(
    ep: Episode,
    work: Path,
    models: Any,
    speaker_params: dict[str, Any],
    segment_params: dict[str, Any] | None = None,
    separate: bool = True,
) -> dict:
    """Segment (default settings, resumed when done) and speaker filter (run again) on one
    episode, after the separate stage (default settings, resumed) when ``separate``; the kept
    rows of both and the filter's threshold."""
    from ingest.local import file_item
    from malmoi.config import SegmentConfig, SeparateConfig, SpeakerFilterConfig
    from malmoi.manifest import read_records
    from malmoi.stage import items_from
    from segment.stage import SegmentStage
    from separate.stage import SeparateStage
    from speaker_filter.stage import SpeakerFilterStage

    root = work / ep.name
    inputs = [file_item(ep.audio)]
    if separate:
        root = work / "separated" / ep.name
        SeparateStage(SeparateConfig(), root / "separate", models).run(inputs)
        inputs = items_from(root / "separate", stem="vocals")
    SegmentStage(SegmentConfig(**(segment_params or {})), root / "segment", models).run(inputs)
    slices = items_from(root / "segment")
    params = SpeakerFilterConfig(
        references=ep.references, profiles_dir=root / "profiles", **speaker_params
    )
    SpeakerFilterStage(params, root / "speaker_filter").run(slices, force=True, prune=True)
    out = root / "speaker_filter"
    return {
        "sliced": read_records(root / "segment" / "manifest.csv"),
        "kept": read_records(out / "manifest.csv"),
        "rejected": read_records(out / "rejected.csv"),
        "threshold": json.loads((out / "threshold.json").read_text(encoding="utf-8")),
    }


def score_episode(ep: Episode, run: dict) -> PairScores:
    host_total = sum(t.stop - t.start for t in ep.truth if t.speaker == ep.host)
    return PairScores(
        ep.name,
        host_total,
        seconds_of(run["sliced"], ep.truth, ep.host),
        seconds_of(run["kept"], ep.truth, ep.host),
        speech_of(run["kept"], ep.truth),
        tuple(float(r["duration"]) for r in run["kept"]),
    )


def evaluate(
    shared: Path,
    work: Path,
    pair_list: Sequence[tuple[str, str]],
    models: Any = None,
    speaker_params: dict[str, Any] | None = None,
    segment_params: dict[str, Any] | None = None,
    seed: int = 22,
    separate: bool = True,
) -> tuple[list[PairScores], dict[str, dict]]:
    """Build (once), run and score every pair's episode."""
    from malmoi.config import ModelsConfig

    if models is None:
        models = ModelsConfig(search_dirs=[shared / "models"])
    scores, runs = [], {}
    for k, (host, guest) in enumerate(pair_list):
        ep = build_episode(shared, host, guest, work / "episodes", seed + k)
        run = run_episode(ep, work, models, speaker_params or {}, segment_params, separate)
        runs[ep.name] = run | {"episode": ep}
        scores.append(score_episode(ep, run))
    return scores, runs


def table(scores: Sequence[PairScores]) -> str:
    rows = [
        [s.name, f"{s.host_total:.0f}", f"{s.precision:.3f}", f"{s.recall:.3f}",
         f"{s.coverage:.3f}", f"{s.filter_recall:.3f}", str(len(s.kept_seconds)),
         f"{np.median(s.kept_seconds):.1f}" if s.kept_seconds else "-"]
        for s in [*scores, total("overall", scores)]
    ]  # fmt: skip
    worst = min(scores, key=lambda s: s.filter_recall)
    rows.append(["worst pair", worst.name, f"{min(s.precision for s in scores):.3f}",
                 f"{min(s.recall for s in scores):.3f}", f"{min(s.coverage for s in scores):.3f}",
                 f"{worst.filter_recall:.3f}", "", ""])  # fmt: skip
    return markdown_table(
        ["host-guest", "host s", "precision", "recall", "segment coverage", "filter recall",
         "kept slices", "median s"],
        rows,
        right=(1, 2, 3, 4, 5, 6, 7),
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.host_episodes", description=__doc__)
    ap.add_argument("--case", choices=("same", "mixed", "all"), default="all")
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "host_episodes")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument(
        "--segment",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a segment setting other than the default (e.g. max_gap=0.5)",
    )
    ap.add_argument(
        "--separate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the separate stage (Spleeter, default settings) first, as the pipeline does; "
        "--no-separate: segment the episode as it is (music beds left at 15 dB)",
    )
    ap.add_argument(
        "--speaker",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a speaker-filter setting other than the default (e.g. join_gap=0)",
    )
    ap.add_argument("--pair", action="append", default=[], help="HOST-GUEST (repeat); default all")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cases = ("same", "mixed") if args.case == "all" else (args.case,)
    for case in cases:
        pl = pairs(case)
        if args.pair:
            pl = [p for p in pl if "-".join(p) in args.pair]
            if not pl:
                continue
        seg = dict(kv.split("=", 1) for kv in args.segment)
        spk = dict(kv.split("=", 1) for kv in args.speaker)
        scores, _ = evaluate(
            args.shared, args.work, pl, speaker_params=spk, segment_params=seg,
            separate=args.separate,
        )  # fmt: skip
        print(f"\n## {case}-gender guest ({len(pl)} episodes)\n")
        print(table(scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
