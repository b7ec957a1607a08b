"""Export's duplicate check (issue 20): the same episode from two sources, re-encoded or
rebroadcast after an intro, reaches the dataset once; distinct speech of the same voice is
never called a duplicate. Real ingest (ffmpeg), slices cut like the segment stage's, Chromaprint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from export.stage import ExportStage
from export.verify import verify
from ingest.local import file_item
from ingest.stage import IngestStage
from malmoi.config import ExportConfig, IngestConfig
from malmoi.manifest import Table
from malmoi.stage import items_from
from segment.stage import SliceRow
from tests.media import encode, ffmpeg, korean_speech

SENTENCES = [
    "오늘은 날씨가 맑고 바람이 조금 불겠습니다.",
    "서울의 낮 기온은 이십오 도까지 오르겠습니다.",
    "다음 소식입니다. 시청 앞 광장에서 축제가 열립니다.",
]
OTHER = [
    "이번 주말에는 전국에 비가 내릴 것으로 보입니다.",
    "지금부터 교통 정보를 전해 드리겠습니다.",
    "한강 공원에는 많은 시민들이 모였습니다.",
]
GAP = 0.6  # seconds of silence between sentences
SR = 22050
REASON = "duplicate of "  # the reason export gives


def episode(folder: Path, name: str, texts: list[str], voice: str = "ko") -> tuple[Path, list]:
    """A WAV of ``texts`` spoken by espeak-ng with pauses, and each sentence's (start, stop)."""
    parts, spans, t = [], [], 0.0
    for i, text in enumerate(texts):
        wav, sr = sf.read(str(korean_speech(folder / f".{name}-{i}.wav", text, voice)))
        assert sr == SR
        gap = np.zeros(int(GAP * SR))
        parts += [wav, gap]
        spans.append((t, t + len(wav) / SR))
        t += (len(wav) + len(gap)) / SR
    path = folder / f"{name}.wav"
    sf.write(str(path), np.concatenate(parts), SR, subtype="PCM_16")
    return path, spans


def segment_like(root: Path, cuts: dict[str, list[tuple[float, float]]]) -> Path:
    """A segment stage's folder: for each ingest row, slices of its WAV at ``cuts[stem]``
    (seconds into the source), rows as the segment stage writes them."""
    folder = root / "segment"
    rows = []
    for rec in Table(root / "ingest", IngestStage.row_type).rows():
        audio, sr = sf.read(str(root / "ingest" / rec.path))
        stem = next(k for k in cuts if rec.id.startswith(k))
        for n, (start, stop) in enumerate(cuts[stem]):
            sid = f"{rec.id}.{n:03d}"
            dest = folder / rec.id / f"{n:03d}.wav"
            dest.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(dest), audio[int(start * sr) : int(stop * sr)], sr, subtype="PCM_16")
            rows.append(
                SliceRow(
                    id=sid,
                    parent_id=rec.id,
                    path=dest.relative_to(folder).as_posix(),
                    duration=(int(stop * sr) - int(start * sr)) / sr,
                    sample_rate=sr,
                    channels=1,
                    source=rec.source,
                    key=f"k-{sid}",
                    params="{}",
                    start=start,
                    stop=stop,
                    label="speech",
                    gender="",
                    gender_score=None,
                    gender_engine="embedding",
                )
            )
    Table(folder, SliceRow).append(rows)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An episode (a_news.wav), its exact copy under another name, an Opus re-encoding, an mp3
    rebroadcast after a 3-s intro in another voice, and a different episode of the same voice
    (z_other.wav); ingested for real, cut into slices at the sentences."""
    root = tmp_path_factory.mktemp("dedup")
    raw = root / "raw"
    raw.mkdir()
    original, spans = episode(raw, "a_news", SENTENCES)
    shutil.copy(original, raw / "b_copy.wav")
    encode(original, raw / "c_reencoded.opus", "-c:a", "libopus", "-b:a", "32k")
    intro, _ = episode(raw, ".intro", ["안녕하세요, 여러분."], voice="ko+f3")
    lead = sf.read(str(intro))[0][: int(3.0 * SR)]
    lead = np.concatenate([lead, np.zeros(int(3.0 * SR) - len(lead))])
    sf.write(str(raw / ".d.wav"), np.concatenate([lead, sf.read(str(original))[0]]), SR)
    encode(raw / ".d.wav", raw / "d_rebroadcast.mp3", "-c:a", "libmp3lame", "-b:a", "64k")
    _, other_spans = episode(raw, "z_other", OTHER)
    IngestStage(IngestConfig(), root / "ingest").run(
        [file_item(p) for p in sorted(raw.iterdir()) if not p.name.startswith(".")]
    )
    shifted = [(s + 3.0 + 0.1, e + 3.0 + 0.15) for s, e in spans]  # cut a little differently
    segment_like(
        root,
        {
            "a_news": spans,
            "b_copy": spans,
            "c_reencoded": spans,
            "d_rebroadcast": shifted,
            "z_other": other_spans,
        },
    )
    return {"root": root, "n": len(spans)}


def export(root: Path, out: Path, **params: object) -> tuple[list[dict], pd.DataFrame]:
    stage = ExportStage(ExportConfig(text="none", **params), out, lineage_root=root)
    report = stage.run(items_from(root / "segment"))
    assert report.failed == 0, report.failures
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    rejected = (
        pd.read_csv(out / "rejected.csv", dtype=str)
        if (out / "rejected.csv").exists()
        else pd.DataFrame(columns=["id", "reason"])
    )
    return rows, rejected


def test_copies_of_an_episode_are_exported_once_before_the_splits(
    sources: dict, tmp_path: Path
) -> None:
    root, n = sources["root"], sources["n"]
    out = tmp_path / "dataset"
    # every source in its own split if it could: shares that would put copies apart
    rows, rejected = export(root, out, splits={"train": 0.34, "validation": 0.33, "test": 0.33})
    kept_sources = {r["source_id"].split("-")[0] for r in rows}
    assert kept_sources == {"a_news", "z_other"}, rows
    assert len(rows) == 2 * n
    reasons = dict(zip(rejected["id"], rejected["reason"], strict=True))
    assert len(reasons) == 3 * n, reasons
    kept_ids = {r["id"] for r in rows}
    a_ids = sorted(i for i in kept_ids if i.startswith("a_news"))
    for copy in ("b_copy", "c_reencoded", "d_rebroadcast"):
        mine = sorted(i for i in reasons if i.startswith(copy))
        assert len(mine) == n, (copy, reasons)
        # each slice names the original's slice of the same sentence
        assert [reasons[i] for i in mine] == [REASON + a for a in a_ids], (copy, reasons)
    # the splits are drawn over the kept sources only, and the dataset verifies
    info = json.loads((out / "dataset.json").read_text())
    assert {s["source_id"].split("-")[0] for s in info["provenance"]["sources"]} == {
        "a_news",
        "z_other",
    }
    assert verify(out) == []
    assert not any((out / "wavs" / f"{i}.wav").exists() for i in reasons)  # no orphans
    assert all((out / ".dedup/wavs" / f"{i}.wav").is_file() for i in reasons)
    # dedup off: the same folder keeps every copy again (no fingerprint or audio recomputed)
    rows_off, rejected_off = export(root, out, dedup=False)
    assert len(rows_off) == 5 * n and rejected_off.empty
    assert all((out / "wavs" / f"{i}.wav").is_file() for i in reasons)
    rows_on, _ = export(root, out)
    assert {r["id"] for r in rows_on} == kept_ids
    # a new threshold re-partitions from the stored fingerprints: none is computed again, no
    # WAV written again; the exact copy stays out whatever the threshold (its samples' hash)
    stored = {p: p.stat().st_mtime_ns for p in (out / ".dedup").rglob("*.npy")}
    wavs = {p: p.stat().st_mtime_ns for p in (out / "wavs").glob("*.wav")}
    assert stored
    rows_strict, rejected_strict = export(root, out, dedup_max_ber=0.001)
    assert {p: p.stat().st_mtime_ns for p in (out / ".dedup").rglob("*.npy")} == stored
    assert all(p.stat().st_mtime_ns == t for p, t in wavs.items() if p.exists())
    strict = dict(zip(rejected_strict["id"], rejected_strict["reason"], strict=True))
    assert sorted(i for i in strict if i.startswith("b_copy")) == sorted(
        i for i in reasons if i.startswith("b_copy")
    )
    assert len(rows_strict) > len(rows_on)  # re-encodings are above a 0.001 bit error rate


def test_distinct_sentences_of_the_same_voice_are_not_duplicates(tmp_path: Path) -> None:
    """Every sentence its own slice file (plain files to `malmoi export`: padded slice
    fingerprints), one espeak-ng voice, two encodings of each: only the re-encodings go."""
    folder = tmp_path / "slices"
    folder.mkdir()
    texts = SENTENCES + OTHER
    for i, text in enumerate(texts):
        korean_speech(folder / f"s{i}.wav", text)
    out = tmp_path / "dataset"
    stage = ExportStage(ExportConfig(text="none"), out)
    from ingest.local import discover

    report = stage.run(list(discover([folder], ["wav"])))
    assert report.kept == len(texts) and report.rejected == 0
    rejected = out / "rejected.csv"
    assert not rejected.exists() or "duplicate" not in rejected.read_text()
    # now with a re-encoded copy of the first two sentences, 0.1 s trimmed at the start
    for i in (0, 1):
        wav, sr = sf.read(str(folder / f"s{i}.wav"))
        sf.write(str(tmp_path / f"t{i}.wav"), wav[int(0.1 * sr) :], sr)
        ffmpeg(
            "-i",
            str(tmp_path / f"t{i}.wav"),
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            str(tmp_path / f"t{i}.opus"),
        )
        ffmpeg("-i", str(tmp_path / f"t{i}.opus"), str(folder / f"t{i}.wav"))
    report = ExportStage(ExportConfig(text="none"), out).run(list(discover([folder], ["wav"])))
    table = pd.read_csv(rejected, dtype=str)
    assert sorted(table["id"].str.split("-").str[0]) == ["t0", "t1"], table
    assert all(r.startswith(REASON + "s") for r in table["reason"]), table


def test_without_fpcalc_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import export.dedup as dedup

    monkeypatch.setattr(dedup.shutil, "which", lambda name: None)
    with pytest.raises(dedup.FpcalcMissing, match="apt-get install libchromaprint-tools"):
        dedup.require_fpcalc()
