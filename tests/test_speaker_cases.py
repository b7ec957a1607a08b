"""Issue 11's episode cases for the speaker filter, end to end through the segment stage:

- turn-taking: two men (LibriSpeech 1688, the target, and 2609) alternate sentence by sentence
  with 0.3-0.8 s pauses; references are 1688's utterances 0-2; the kept slices hold >= 90 % of
  target time (precision on time) and >= 80 % of the target's time is kept (recall on time;
  the README's 0.811);
- dominant: one man (3005) holds >= 60 % of the talk, two others the rest; ``dominant`` with no
  reference keeps 3005 with precision >= 0.9 and recall >= 0.9 on time (README: 0.918).

Each episode is written at 44.1 kHz, segmented once (embedding gender engine, gender any, the
demo config's segment settings, no download) and filtered at the automatic threshold. The
numbers (precision, recall, threshold, each slice's score by true speaker) are printed: see them
with ``pytest -s``."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from eval.episodes import (
    Turn,
    make_episode,
    overlap_by_speaker,
    time_scores,
    write_truth,
)
from malmoi.config import ModelsConfig, SegmentConfig, SpeakerFilterConfig
from malmoi.manifest import read_records
from tests.conftest import utterances

TARGET, OTHER = "1688", "2609"  # both male
DOMINANT, MINOR = "3005", ("1688", "2609")
PAUSES = (0.3, 0.8)
SEED = 11
MIN_PRECISION = 0.9  # issue 11, both cases
# recall on time, just under the README's measured values (0.811 turn-taking, 0.918 dominant):
# a change that rejects one more of the target's slices drops recall below these
MIN_RECALL_TURNS = 0.80
MIN_RECALL_DOMINANT = 0.90
MIN_SHARE = 0.6  # the dominant voice's share of the talk


@pytest.fixture(scope="module")
def models(shared: Path) -> ModelsConfig:
    """The suite's model store, with ../shared/models searched first; never downloads."""
    return ModelsConfig(
        dir=Path(os.environ["MALMOI_MODEL_DIR"]), search_dirs=[shared / "models"], offline=True
    )


def run_case(
    turns: list[tuple[str, Path]],
    params: SpeakerFilterConfig,
    models: ModelsConfig,
    root: Path,
) -> dict[str, Any]:
    """Episode of ``turns`` -> segment stage -> speaker filter stage; the truth and both
    stages' rows."""
    from ingest.local import file_item
    from malmoi.stage import items_from
    from segment.stage import SegmentStage
    from speaker_filter.stage import SpeakerFilterStage

    wav, sr, truth = make_episode(turns, PAUSES, np.random.default_rng(SEED))
    episode = root / "episode.wav"
    sf.write(str(episode), wav, sr, subtype="PCM_16")
    write_truth(truth, root / "truth.csv")
    seg = SegmentConfig(gender="any", gender_engine="embedding", min_duration=1.0)
    seg_report = SegmentStage(seg, root / "segment", models).run([file_item(episode)])
    assert seg_report.failed == 0 and seg_report.processed == 1
    slices = items_from(root / "segment")
    assert slices, "the segment stage kept no slice"
    spk_report = SpeakerFilterStage(params, root / "speaker_filter").run(slices)
    assert spk_report.failed == 0
    out = root / "speaker_filter"
    return {
        "truth": truth,
        "seconds": len(wav) / sr,
        "slices": len(slices),
        "kept": read_records(out / "manifest.csv"),
        "rejected": read_records(out / "rejected.csv"),
        "threshold": json.loads((out / "threshold.json").read_text(encoding="utf-8")),
    }


def describe(case: dict[str, Any], target: str, name: str) -> str:
    """The case's numbers as printed lines: precision, recall, threshold, slice by slice."""
    truth: list[Turn] = case["truth"]
    ts = time_scores(case["kept"], truth, target)
    thr = case["threshold"]
    lines = [
        f"--- {name}: {case['seconds']:.1f} s episode, {len(truth)} turns, "
        f"{case['slices']} slices from the segment stage",
        f"precision on time {ts.precision:.3f}, recall on time {ts.recall:.3f} "
        f"(target kept {ts.target_kept:.1f} s of {ts.target_total:.1f} s, "
        f"others kept {ts.other_kept:.1f} s, pauses kept {ts.pause_kept:.1f} s)",
        f"threshold {thr['value']:.3f} rule {thr['rule']}: {thr['reason']}"
        + (f"; {thr['dominant']}" if "dominant" in thr else ""),
        "   start    stop   score    sim  kept  speech by true speaker",
    ]
    kept_ids = {r["id"] for r in case["kept"]}
    for r in sorted(case["kept"] + case["rejected"], key=lambda r: float(r["start"])):
        a, b = float(r["start"]), float(r["stop"])
        by = overlap_by_speaker(a, b, truth)
        who = ", ".join(f"{s} {v:.1f} s" for s, v in sorted(by.items(), key=lambda x: -x[1]))
        sc = f"{float(r['score']):8.2f}" if r.get("score") else "       -"
        sim = f"{float(r['similarity']):7.3f}" if r.get("similarity") else "      -"
        keep = "yes" if r["id"] in kept_ids else "no"
        lines.append(f"{a:8.2f}{b:8.2f}{sc}{sim}  {keep:>4}  {who or '-'}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def turn_taking(
    shared: Path, models: ModelsConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """1688's utterances 3-9 and 2609's 3-9, alternating; references: 1688's 0-2."""
    target, other = utterances(shared, TARGET), utterances(shared, OTHER)
    turns = [
        t for a, b in zip(target[3:10], other[3:10], strict=True) for t in ((TARGET, a), (OTHER, b))
    ]
    root = tmp_path_factory.mktemp("turns")
    params = SpeakerFilterConfig(references=target[:3], profiles_dir=root / "profiles")
    return run_case(turns, params, models, root)


@pytest.fixture(scope="module")
def dominant(
    shared: Path, models: ModelsConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """3005's utterances 0-6 with two of 1688's and two of 2609's between them; no reference."""
    d = utterances(shared, DOMINANT)[:7]
    m1, m2 = (utterances(shared, s)[3:5] for s in MINOR)
    turns = [
        (DOMINANT, d[0]),
        (DOMINANT, d[1]),
        (MINOR[0], m1[0]),
        (DOMINANT, d[2]),
        (MINOR[1], m2[0]),
        (DOMINANT, d[3]),
        (DOMINANT, d[4]),
        (MINOR[0], m1[1]),
        (DOMINANT, d[5]),
        (MINOR[1], m2[1]),
        (DOMINANT, d[6]),
    ]
    root = tmp_path_factory.mktemp("dominant")
    params = SpeakerFilterConfig(dominant=True, profiles_dir=root / "profiles")
    return run_case(turns, params, models, root)


def test_episode_truth_matches_the_clips(shared: Path, tmp_path: Path) -> None:
    """The generator: turns in order, pauses within bounds, spans as long as the clips."""
    clips = [(TARGET, utterances(shared, TARGET)[2]), (OTHER, utterances(shared, OTHER)[3])]
    wav, sr, truth = make_episode(clips * 2, PAUSES, np.random.default_rng(0), sr=16000)
    assert sr == 16000 and wav.dtype == np.float32
    assert [t.speaker for t in truth] == [TARGET, OTHER, TARGET, OTHER]
    for t, (_, clip) in zip(truth, clips * 2, strict=True):
        assert t.stop - t.start == pytest.approx(sf.info(str(clip)).duration, abs=1e-3)
    for a, b in itertools.pairwise(truth):
        assert PAUSES[0] - 1e-3 <= b.start - a.stop <= PAUSES[1] + 1e-3
    assert len(wav) / sr == pytest.approx(truth[-1].stop + 0.5, abs=1e-3)
    # the audio at a turn's place is that clip's (16 kHz source, no resampling here)
    src = sf.read(str(clips[1][1]), dtype="float32")[0]
    a = round(truth[1].start * sr)
    np.testing.assert_allclose(wav[a : a + len(src)], src, atol=1e-4)
    write_truth(truth, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "speaker,start,stop,clip"


def test_turn_taking_keeps_the_target_with_precision_0_9_recall_0_8(
    turn_taking: dict[str, Any],
) -> None:
    print("\n" + describe(turn_taking, TARGET, "turn-taking 1688 vs 2609"))
    ts = time_scores(turn_taking["kept"], turn_taking["truth"], TARGET)
    assert turn_taking["kept"], "nothing kept"
    assert ts.precision >= MIN_PRECISION, (ts, turn_taking["threshold"])
    assert ts.recall >= MIN_RECALL_TURNS, (ts, turn_taking["threshold"])


def test_dominant_keeps_the_majority_voice_with_precision_0_9_recall_0_9(
    dominant: dict[str, Any],
) -> None:
    truth: list[Turn] = dominant["truth"]
    talk = {
        s: sum(t.stop - t.start for t in truth if t.speaker == s)
        for s in {t.speaker for t in truth}
    }
    share = talk[DOMINANT] / sum(talk.values())
    print("\n" + describe(dominant, DOMINANT, f"dominant 3005 ({share:.0%} of the talk)"))
    assert share >= MIN_SHARE, talk
    ts = time_scores(dominant["kept"], truth, DOMINANT)
    assert dominant["kept"], "nothing kept"
    assert ts.precision >= MIN_PRECISION, (ts, dominant["threshold"])
    assert ts.recall >= MIN_RECALL_DOMINANT, (ts, dominant["threshold"])
