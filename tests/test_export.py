"""The export stage end to end: a build from generated speech (the synthetic source, with its
subtitle file) and three LibriSpeech "episodes" of ../shared, through every stage to the dataset;
the dataset loads with Hugging Face ``datasets`` (audiofolder, offline) and pandas, the three
metadata files agree, slices under subtitle cues carry their text, ``malmoi verify`` passes and
then fails on a truncated WAV; a re-export at another rate and seed recomputes no earlier stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import build_from, child_env, run_malmoi

SPEAKERS = ("1688", "2609", "3331")


def episode(shared: Path, speaker: str, dest: Path) -> Path:
    """Four utterances of ``speaker`` with 0.6 s pauses, as one 16 kHz WAV."""
    files = sorted((shared / "data/librispeech/utterances" / speaker).glob("*.flac"))[:4]
    parts = []
    for f in files:
        wav, sr = sf.read(str(f), dtype="float32")
        assert sr == 16000
        parts += [wav, np.zeros(int(0.6 * sr), dtype=np.float32)]
    sf.write(str(dest), np.concatenate(parts), 16000)
    return dest


@pytest.fixture(scope="module")
def built(shared: Path, dnsmos_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("export")
    eps = root / "episodes"
    eps.mkdir()
    for s in SPEAKERS:
        episode(shared, s, eps / f"episode-{s}.wav")
    cfg = {
        "name": "exporttest",
        "output_dir": str(root / "out"),
        "sources": [
            {"kind": "synthetic", "video": False},
            {"kind": "local", "paths": [str(eps)]},
        ],
        "separate": {"engine": "repet"},
        "segment": {"gender_engine": "embedding", "min_duration": 1.0},
        # off: the LibriSpeech episodes are English (transcribe's language rule would reject
        # them) and the export's text falls back to the subtitles, what this test checks; the
        # text policy with transcribe is tests/test_export_text_policy.py's
        "transcribe": {"enabled": False},
        "export": {
            "sample_rate": 22050,
            "splits": {"train": 0.5, "validation": 0.25, "test": 0.25},
            "max_duration": 15.0,
        },
        "models": {
            "dir": os.environ["MALMOI_MODEL_DIR"],
            "search_dirs": [str(shared / "models")],
        },
    }
    config = build_from(root, "exporttest", cfg)
    return {"root": root, "config": config, "dataset": root / "out/export"}


def load_audiofolder(dataset: Path, home: Path) -> list[dict]:
    """The dataset as ``datasets`` loads it (a child process: offline, its own cache)."""
    code = (
        "import json, sys\n"
        "from datasets import load_dataset\n"
        "ds = load_dataset('audiofolder', data_dir=sys.argv[1], split='train')\n"
        "rows = [{'id': r['id'], 'text': r['text'] or '', 'split': r['split'],\n"
        "         'seconds': len(r['audio']['array']) / r['audio']['sampling_rate'],\n"
        "         'sr': r['audio']['sampling_rate']} for r in ds]\n"
        "print(json.dumps(rows, ensure_ascii=False))\n"
    )
    env = child_env({"HF_DATASETS_OFFLINE": "1", "HF_HOME": str(home)})
    proc = subprocess.run(
        [sys.executable, "-c", code, str(dataset)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def expected_text(turns: pd.DataFrame, start: float, stop: float) -> str:
    """The sentences whose midpoint lies in [start, stop) (the export's cue rule: a cue cut by
    a slice boundary goes to the slice holding its larger part)."""
    picked = [t.text for t in turns.itertuples() if start <= (t.start + t.stop) / 2 < stop]
    return " ".join(picked)


def test_the_dataset_loads_everywhere_and_the_three_files_agree(built: dict) -> None:
    dataset = built["dataset"]
    jsonl = pd.read_json(dataset / "manifest.jsonl", lines=True, dtype={"id": str})
    csv = pd.read_csv(dataset / "metadata.csv", keep_default_na=False, dtype={"id": str})
    ljs = pd.read_csv(
        dataset / "metadata.txt",
        sep="|",
        header=None,
        names=["id", "text", "normalized_text"],
        keep_default_na=False,
        dtype=str,
        quoting=3,
    )
    hf = load_audiofolder(dataset, built["root"] / "hf-home")
    n = len(jsonl)
    assert n >= 8 and len(csv) == len(ljs) == len(hf) == n
    assert list(csv["id"]) == list(jsonl["id"]) == list(ljs["id"])
    by_id = {r["id"]: r for r in hf}
    for row in jsonl.itertuples():
        got = by_id[row.id]
        assert got["sr"] == 22050
        assert abs(got["seconds"] - row.duration) <= 0.010, row.id
        assert got["text"] == row.text and got["split"] == row.split
    assert (csv["text"] == jsonl["text"]).all() and (ljs["text"] == jsonl["text"]).all()
    assert (csv["split"] == jsonl["split"]).all()
    assert np.allclose(csv["duration"], jsonl["duration"])
    assert set(jsonl.columns) >= {
        "audio_filepath", "duration", "text", "id", "speaker", "gender", "source_url",
        "source_title", "source_offset", "source_end", "snr_db", "dnsmos_ovrl", "similarity",
        "split",
    }  # fmt: skip
    # splits by source: 4 sources (the synthetic episode, 3 LibriSpeech episodes)
    assert jsonl["source_id"].nunique() == 4
    assert (jsonl.groupby("source_id")["split"].nunique() == 1).all()
    assert jsonl["snr_db"].notna().all() and jsonl["dnsmos_ovrl"].notna().all()
    assert (jsonl["duration"] <= 15.0).all()


def test_slices_under_subtitle_cues_carry_their_text(built: dict) -> None:
    dataset = built["dataset"]
    jsonl = pd.read_json(dataset / "manifest.jsonl", lines=True, dtype={"id": str})
    raw = built["root"] / "out/raw/synthetic"
    assert sorted(p.name for p in raw.glob("*.vtt")) == ["말모이_데모.ko.vtt"]
    turns = pd.read_csv(raw / "reference/turns.csv")
    synthetic = jsonl[jsonl["source_url"].str.endswith("말모이_데모.m4a")]
    others = jsonl[~jsonl.index.isin(synthetic.index)]
    assert len(synthetic) >= 4
    with_text = 0
    for row in synthetic.itertuples():
        want = expected_text(turns, row.source_offset, row.source_end)
        assert row.text == want, (row.id, row.source_offset, row.source_end, row.text, want)
        with_text += bool(want)
        assert row.text_source == ("subtitles" if want else "")
    assert with_text >= len(synthetic) - 1
    assert (others["text"] == "").all() and (others["text_source"] == "").all()
    card = (dataset / "README.md").read_text(encoding="utf-8")
    assert f"{with_text} of {len(jsonl)}" in card


def test_verify_passes_then_names_a_truncated_wav(built: dict, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "dataset"
    shutil.copytree(built["dataset"], copy)
    ok = run_malmoi("verify", str(copy))
    assert ok.returncode == 0, ok.stderr[-3000:]
    victim = sorted((copy / "wavs").glob("*.wav"))[1]
    os.truncate(victim, victim.stat().st_size // 2)
    bad = run_malmoi("verify", str(copy))
    assert bad.returncode == 1
    assert f"wavs/{victim.name}" in bad.stderr, bad.stderr


def test_a_re_export_recomputes_no_earlier_stage(built: dict) -> None:
    out = built["root"] / "out"
    stages = ("ingest", "separate", "segment", "denoise")
    before = {s: (out / s / "progress.csv").stat().st_mtime_ns for s in stages}
    manifest = pd.read_json(built["dataset"] / "manifest.jsonl", lines=True, dtype={"id": str})
    proc = run_malmoi(
        "export", str(built["config"]), "--sample-rate", "16000", "--seed", "7",
        cwd=built["root"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {s: (out / s / "progress.csv").stat().st_mtime_ns for s in stages} == before
    again = pd.read_json(built["dataset"] / "manifest.jsonl", lines=True, dtype={"id": str})
    assert list(again["id"]) == list(manifest["id"])
    for row in again.itertuples():
        assert sf.info(str(built["dataset"] / row.audio_filepath)).samplerate == 16000
    info = json.loads((built["dataset"] / "dataset.json").read_text(encoding="utf-8"))
    assert info["sample_rate"] == 16000 and info["seed"] == 7
    assert run_malmoi("verify", str(built["dataset"])).returncode == 0
