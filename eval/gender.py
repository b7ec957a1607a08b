"""Gender engines of the segment stage compared on LibriSpeech: accuracy per utterance and the
gender CNN's cost.

    .venv/bin/python -m eval.gender --shared ../shared/data/librispeech

Sets (../shared): the six LibriSpeech test-other speakers × 10 utterances, and the 120
train-clean-100 speakers (60 F, 60 M, one utterance each; speakers inaSpeechSegmenter's CNNs were
not trained on). Each clip is a full utterance, or a crop of it — the 2-3 s crops of
:func:`eval.train_gender.crop_positions` (as the embedding classifier was measured) and 1-s
crops at the start, middle and end — treated as one slice of the utterance, as the stage treats
a slice of a longer file: features, the energy detector and the speech/music/noise CNN run on
the whole utterance, the gender is then told for the clip's span.

Engines:
- ``ina``: inaSpeechSegmenter's gender CNN on every 20-ms unit of speech with its Viterbi
  smoothing (the stage's ``gender_engine: ina``); a clip's label is the gender of most of its
  speech (by duration);
- ``ina-slice``: the same CNN on at most ``n`` patches spread over the clip's speech
  (:class:`segment.ina.PatchGender`, exactly as the stage calls it), for several ``n``; ``tiled``
  is as many as fit side by side (one per 0.68 s of speech). A clip's label is the higher mean
  probability of its patches and a clip with under 0.25 s of speech is not told (the stage's
  rule, ``segment.ina.MIN_SPEECH_SECONDS``); other rows try the mean log-probability (what a
  Viterbi pass that never switches label would pick) and other speech thresholds at
  ``--chosen`` patches (default: the stage's ``segment.ina.PATCHES``);
- ``embedding``: Resemblyzer + the committed logistic regression; its figures are read from
  ``segment/gender_embedding.json`` (written by :mod:`eval.train_gender`): on train-clean-100 the
  5-fold speaker-disjoint cross-validation (a classifier trained on those speakers cannot be
  measured on them otherwise), on test-other the committed model.

A clip whose gender the engine does not tell (too little speech) counts as wrong and is also
counted in its own column. The cost table counts the patches of the clips the stage's rule
tells; its seconds are those of all the patches (the lower-threshold rows' too). Prints
Markdown tables; writes every clip's result to ``eval/out/gender.csv``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.common import markdown_table
from eval.train_gender import TEST_SPEAKERS, crop_positions, read_speakers_txt

UNIT = 0.02
GENDERS = ("female", "male")  # the gender CNN's outputs
PATCH_COUNTS = (1, 2, 3, 5, 10, 0)  # 0: tiled (as many as fit side by side)
LOG_MEAN = (10, 0)  # patch counts also decided by the mean log-probability
MIN_SPEECH = (0.5, 0.0)  # other thresholds of speech (s) tried at --chosen patches
SHORT_CROP = 1.0  # seconds


@dataclass
class Clip:
    """One utterance or a crop of it, in 20-ms units of its utterance."""

    subset: str
    file: str
    speaker: str
    gender: str  # female / male
    kind: str  # full / crop 2-3 s / crop 1 s
    a: int
    b: int
    told: dict[str, str] = field(default_factory=dict)  # engine -> label ('' untold)


@dataclass
class Cost:
    seconds: float = 0.0
    patches: int = 0


def engine_name(n: int, how: str = "") -> str:
    name = f"ina-slice, {n} patch{'es' if n > 1 else ''}" if n else "ina-slice, tiled"
    return f"{name}, {how}" if how else name


def variants(chosen: int) -> list[tuple[str, int, str, float]]:
    """(engine name, patches, aggregation, minimum speech in seconds) of every ina-slice row:
    the stage's rule (mean probability, at least MIN_SPEECH_SECONDS of speech) at each patch
    count, then the others."""
    from segment.ina import MIN_SPEECH_SECONDS as least

    out = [(engine_name(n), n, "mean", least) for n in PATCH_COUNTS]
    out += [(engine_name(n, "mean log-probability"), n, "log", least) for n in LOG_MEAN]
    for m in MIN_SPEECH:
        out.append((engine_name(chosen, f"speech >= {m:g} s"), chosen, "mean", m))
    return out


def clips_of(subset: str, path: str, gender: str, units: int) -> list[Clip]:
    """The full utterance, its 2-3 s crops and its 1-s crops."""
    spk = os.path.basename(path).split("-")[0]
    base = os.path.basename(path)
    out = [Clip(subset, base, spk, gender, "full", 0, units)]
    samples = units * 320  # 16 kHz
    for _, start, stop in crop_positions(samples):
        out.append(Clip(subset, base, spk, gender, "crop 2-3 s", start // 320, stop // 320))
    n = round(SHORT_CROP / UNIT)
    if units >= n:
        for start in (0, (units - n) // 2, units - n):
            out.append(Clip(subset, base, spk, gender, "crop 1 s", start, start + n))
    return out


def run_file(
    path: str,
    segmenter,
    patch_gender,
    clips: list[Clip],
    costs: dict[str, Cost],
    rows: list[tuple[str, int, str, float]],
) -> float:
    """Every engine on the clips of one utterance (16-kHz FLAC); its seconds of speech."""
    import inaSpeechSegmenter.segmenter as iss

    from segment.ina import MIN_SPEECH_SECONDS, decide, features

    mspec, loge = features(Path(path))
    assert len(loge) >= 68, path  # no padding of short inputs needed (LibriSpeech: > 1 s)
    activity = iss._energy_activity(loge, segmenter.energy_ratio)[::2]
    lseg = [("energy" if lab else "noEnergy", s, e) for lab, s, e in iss._binidx2seglist(activity)]
    t0 = time.perf_counter()
    vad = segmenter.vad(mspec, lseg, 0)
    t1 = time.perf_counter()
    gender = segmenter.gender(mspec, vad, 0)
    t2 = time.perf_counter()
    costs["vad"].seconds += t1 - t0
    costs["ina"].seconds += t2 - t1
    n_units = len(activity)
    speech = np.zeros(n_units, bool)
    male = np.zeros(n_units, bool)
    female = np.zeros(n_units, bool)
    for lab, s, e in vad:
        speech[s:e] = lab == "speech"
    for lab, s, e in gender:
        male[s:e] = lab == "male"
        female[s:e] = lab == "female"
    assert np.array_equal(speech, male | female)  # the gender CNN relabels the VAD's speech
    costs["ina"].patches += int(speech.sum())
    for c in clips:
        m, f = int(male[c.a : c.b].sum()), int(female[c.a : c.b].sum())
        c.told["ina"] = "male" if m > f else "female" if f > m else ""
    spans = [np.flatnonzero(speech[c.a : c.b]) + c.a for c in clips]
    patch_gender.min_speech_seconds = 0.0  # each row applies its own threshold below
    least = MIN_SPEECH_SECONDS / UNIT - 1e-9
    for n in PATCH_COUNTS:
        patch_gender.patches = n or 10**9
        t0 = time.perf_counter()
        probs = patch_gender.patch_probabilities(mspec, spans)
        cost = costs[engine_name(n)]
        cost.seconds += time.perf_counter() - t0
        cost.patches += sum(len(p) for p, s in zip(probs, spans, strict=True) if len(s) >= least)
        for name, patches, how, min_speech in rows:
            if patches != n:
                continue
            for c, s, p in zip(clips, spans, probs, strict=True):
                if len(s) < min_speech / UNIT - 1e-9 or len(p) == 0:
                    c.told[name] = ""
                elif how == "log":
                    c.told[name] = GENDERS[int(np.argmax(np.log(p).mean(axis=0)))]
                else:
                    c.told[name] = decide(p)[0] or ""
    return float(speech.sum()) * UNIT


def accuracy(clips: list[Clip], engine: str) -> tuple[float, int]:
    """(share right, number untold) over ``clips``."""
    right = sum(c.told[engine] == c.gender for c in clips)
    return right / len(clips), sum(c.told[engine] == "" for c in clips)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default="../shared/data/librispeech")
    ap.add_argument("--weights", default="segment/gender_embedding.json")
    ap.add_argument("--out", default="eval/out/gender.csv")
    ap.add_argument(
        "--chosen",
        type=int,
        default=0,
        help="patch count of the minimum-speech rows (default: the stage's, segment.ina.PATCHES)",
    )
    args = ap.parse_args(argv)

    import soundfile as sf

    from malmoi.models import ModelStore
    from segment.ina import PATCHES, InaEngine, PatchGender

    store = ModelStore.from_config(None)
    ina = store.path("ina:speech-music-noise") / "keras_speech_music_noise_cnn.hdf5"
    cnn = store.path("ina:gender") / "keras_male_female_cnn.hdf5"
    segmenter = InaEngine(ina, cnn, batch_size=256).segmenter
    patch_gender = PatchGender(cnn)

    meta = read_speakers_txt(os.path.join(args.shared, "SPEAKERS.TXT"))
    gender_of = {s: ("male" if g == "M" else "female") for s, (g, _) in meta.items()}
    files = [
        ("test-other", f)
        for f in sorted(glob.glob(os.path.join(args.shared, "utterances", "*", "*.flac")))
    ] + [
        ("train-clean-100", f)
        for f in sorted(glob.glob(os.path.join(args.shared, "speakers", "*.flac")))
    ]
    assert {os.path.basename(f).split("-")[0] for s, f in files if s == "test-other"} == set(
        TEST_SPEAKERS
    )
    rows_of = variants(args.chosen or PATCHES)
    names = ["vad", "ina", *(engine_name(n) for n in PATCH_COUNTS)]
    costs = {n: Cost() for n in names}
    clips: list[Clip] = []
    audio = speech_s = 0.0
    started = time.perf_counter()
    for i, (subset, f) in enumerate(files):
        spk = os.path.basename(f).split("-")[0]
        units = sf.info(f).frames // 320
        mine = clips_of(subset, f, gender_of[spk], units)
        speech_s += run_file(f, segmenter, patch_gender, mine, costs, rows_of)
        audio += sf.info(f).duration
        clips += mine
        if (i + 1) % 30 == 0:
            print(f"  {i + 1}/{len(files)} files", flush=True)
    wall = time.perf_counter() - started

    weights = json.loads(Path(args.weights).read_text(encoding="utf-8"))["metadata"]
    engines = ["ina", *(name for name, *_ in rows_of)]
    main_rows = ["ina", *(engine_name(n) for n in PATCH_COUNTS)]
    kinds = ("full", "crop 2-3 s", "crop 1 s")
    print(
        f"\n{len(files)} utterances, {audio / 60:.1f} min of audio, {speech_s / 60:.1f} min "
        f"of it speech (the speech/music/noise CNN), in {wall:.0f} s; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    for subset, what in (
        ("test-other", "6 speakers × 10 utterances"),
        ("train-clean-100", "120 speakers × 1 utterance"),
    ):
        sub = [c for c in clips if c.subset == subset]
        counts = {k: sum(c.kind == k for c in sub) for k in kinds}
        print(f"**{subset}** ({what}); clips: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
        rows = []
        for e in engines:
            cells = [e]
            for k in kinds:
                acc, untold = accuracy([c for c in sub if c.kind == k], e)
                cells.append(pct(acc) + (f" ({untold} untold)" if untold else ""))
            rows.append(cells)
        if subset == "test-other":
            emb = ["embedding (committed model)", pct(weights["test_other"]["full"])]
            emb += [pct(weights["test_other"]["crops"]), "—"]
        else:
            cv = weights["cv"]
            emb = ["embedding (5-fold CV, mean of folds)", pct(cv["mean_full"])]
            emb += [pct(cv["mean_crops"]), "—"]
        rows.append(emb)
        print(markdown_table(["engine", *kinds], rows, right=(1, 2, 3)))
        print()

    test = [c for c in clips if c.subset == "test-other" and c.kind == "full"]
    rows = []
    for spk in sorted({c.speaker for c in test}):
        mine = [c for c in test if c.speaker == spk]
        rows.append([f"{spk} ({mine[0].gender[0].upper()})"])
        rows[-1] += [str(sum(c.told[e] == c.gender for c in mine)) + "/10" for e in main_rows]
    print("**test-other per speaker** (full utterances right)")
    print(markdown_table(["speaker", *main_rows], rows, right=range(1, len(main_rows) + 1)))
    print()

    rows = []
    for n in names:
        c = costs[n]
        rows.append(
            [
                "speech/music/noise CNN (all engines)" if n == "vad" else f"gender: {n}",
                c.patches if n != "vad" else "",
                f"{c.patches / speech_s:.2f}" if n != "vad" else "",
                f"{c.seconds:.1f}",
                f"{c.seconds / audio:.4f}",
            ]
        )
    print(
        "**cost** (every clip of every utterance; an ina-slice call tells all the clips of one "
        "utterance in one batch)"
    )
    print(
        markdown_table(
            ["CNN", "patches", "patches per s of speech", "seconds", "RTF"],
            rows,
            right=(1, 2, 3, 4),
        )
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["subset", "file", "speaker", "gender", "kind", "start_s", "stop_s", *engines])
        for c in clips:
            w.writerow(
                [c.subset, c.file, c.speaker, c.gender, c.kind, c.a * UNIT, c.b * UNIT]
                + [c.told[e] for e in engines]
            )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
