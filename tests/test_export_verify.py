"""``export.verify`` and ``malmoi verify``: a small dataset written by hand after the layout of
issue 12 passes; each kind of corruption is found and the problem names the file."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from export.layout import ljspeech_field
from export.verify import NotADataset, Problem, check, verify
from tests.conftest import run_malmoi

SR = 16000
# id, source_id, split, seconds, text
SLICES = [
    ("ep1.000", "ep1", "train", 1.00, "안녕하세요"),
    ("ep1.001", "ep1", "train", 1.25, "반갑습니다 | 네"),
    ("ep2.000", "ep2", "train", 0.75, ""),
    ("ep2.001", "ep2", "train", 1.50, "오늘 날씨가 좋네요"),
    ("ep3.000", "ep3", "validation", 1.10, "감사합니다"),
    ("ep4.000", "ep4", "test", 0.90, "안녕히 가세요"),
]
LIMITS = {
    "min_duration": 0.5,
    "max_duration": 2.0,
    "min_snr_db": 10.0,
    "min_dnsmos_ovrl": None,
    "min_similarity": None,
}


def _audio(i: int, seconds: float) -> np.ndarray:
    """A distinct tone plus a little seeded noise per slice, int16."""
    t = np.arange(round(seconds * SR)) / SR
    rng = np.random.default_rng(i)
    x = 0.3 * np.sin(2 * np.pi * (220 + 55 * i) * t) + 0.01 * rng.standard_normal(t.size)
    return (x * 32767).astype(np.int16)


def _row(i: int, rid: str, source: str, split: str, seconds: float, text: str) -> dict:
    return {
        "audio_filepath": f"wavs/{rid}.wav",
        "duration": round(seconds * SR) / SR,
        "text": text,
        "id": rid,
        "speaker": "spk1" if i % 2 else "spk0",
        "gender": "female" if i % 2 else "male",
        "source_url": f"https://example.org/{source}",
        "source_title": f"에피소드 {source}",
        "source_id": source,
        "source_offset": 10.0 * i,
        "source_end": 10.0 * i + seconds,
        "snr_db": 20.0 + i,
        "dnsmos_ovrl": 3.1 + i / 10 if i != 2 else None,
        "similarity": None,
        "split": split,
        "text_source": "subtitles" if text else "",
        "licence": "CC BY 4.0",
    }


def write_dataset(root: Path, rows: list[dict]) -> None:
    """manifest.jsonl, metadata.csv and metadata.txt for ``rows`` (as the exporter does)."""
    with (root / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    columns = ["file_name"] + [c for c in rows[0] if c != "audio_filepath"]
    with (root / "metadata.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            cells = {"file_name": row["audio_filepath"], **row}
            writer.writerow(["" if cells[c] is None else cells[c] for c in columns])
    with (root / "metadata.txt").open("w", encoding="utf-8") as fh:
        for row in rows:
            text = ljspeech_field(
                row["text"]
            )  # no '|' inside a field: "반갑습니다 | 네" -> "반갑습니다 네"
            fh.write(f"{row['id']}|{text}|{' '.join(text.split())}\n")


def read_rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").open(encoding="utf-8")]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A valid 6-slice dataset at 16 kHz, 4 sources over train/validation/test."""
    root = tmp_path / "ds"
    (root / "wavs").mkdir(parents=True)
    rows = []
    for i, (rid, source, split, seconds, text) in enumerate(SLICES):
        sf.write(root / "wavs" / f"{rid}.wav", _audio(i, seconds), SR, subtype="PCM_16")
        rows.append(_row(i, rid, source, split, seconds, text))
    write_dataset(root, rows)
    info = {
        "name": "test",
        "sample_rate": SR,
        "limits": LIMITS,
        "splits": {"train": 0.8, "validation": 0.1, "test": 0.1},
        "seed": 0,
        "counts": {"slices": len(rows)},
        "provenance": {},
    }
    (root / "dataset.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    (root / "config.yaml").write_text("name: test\n", encoding="utf-8")
    (root / "README.md").write_text("# test\n", encoding="utf-8")
    return root


def only(problems: list[Problem], path: str) -> list[Problem]:
    """Assert there are problems and all name ``path``; return them."""
    assert problems, "no problem found"
    assert {p.path for p in problems} == {path}, [str(p) for p in problems]
    return problems


def test_valid_dataset_passes(dataset: Path) -> None:
    report = check(dataset)
    assert report.problems == []
    assert report.slices == 6 and report.audio_files == 6
    assert report.seconds == pytest.approx(sum(s[3] for s in SLICES), abs=1e-3)
    assert verify(dataset) == []


def test_problem_is_one_line() -> None:
    p = Problem("wavs/a.wav", "lasts 1 s\nbut says 2 s")
    assert str(p) == "wavs/a.wav: lasts 1 s but says 2 s"
    with pytest.raises(AttributeError):
        p.path = "x"  # type: ignore[misc]


def test_truncated_wav(dataset: Path) -> None:
    wav = dataset / "wavs" / "ep2.001.wav"
    os.truncate(wav, wav.stat().st_size // 2)
    reasons = [p.reason for p in only(verify(dataset), "wavs/ep2.001.wav")]
    assert any(r.startswith("truncated: the header declares") for r in reasons), reasons
    assert any(r.startswith("lasts 0.7") for r in reasons), reasons


def test_header_broken_wav(dataset: Path) -> None:
    wav = dataset / "wavs" / "ep1.000.wav"
    data = bytearray(wav.read_bytes())
    data[:4] = b"JUNK"
    wav.write_bytes(bytes(data))
    [p] = only(verify(dataset), "wavs/ep1.000.wav")
    assert p.reason.startswith("does not decode:")


def test_deleted_wav(dataset: Path) -> None:
    (dataset / "wavs" / "ep3.000.wav").unlink()
    [p] = only(verify(dataset), "wavs/ep3.000.wav")
    assert p.reason == "missing (listed on manifest.jsonl line 5)"


def test_duplicated_wav(dataset: Path) -> None:
    # same length, so only the content hash can tell
    shutil.copyfile(dataset / "wavs" / "ep1.000.wav", dataset / "wavs" / "ep4.000.wav")
    rows = read_rows(dataset)
    rows[5]["duration"] = rows[0]["duration"]
    rows[5]["source_end"] = rows[5]["source_offset"] + rows[0]["duration"]
    write_dataset(dataset, rows)
    [p] = only(verify(dataset), "wavs/ep4.000.wav")
    assert p.reason == "the same audio as wavs/ep1.000.wav (sha256 of the decoded samples)"


def test_duplicate_with_another_header(dataset: Path) -> None:
    """The hash is of the samples: a copy rewritten as WAVEX is still a duplicate."""
    audio, _ = sf.read(dataset / "wavs" / "ep1.000.wav", dtype="int16")
    copy = dataset / "wavs" / "ep1.001.wav"
    sf.write(copy, audio, SR, subtype="PCM_16", format="WAVEX")
    assert copy.read_bytes() != (dataset / "wavs" / "ep1.000.wav").read_bytes()
    rows = read_rows(dataset)
    rows[1]["duration"] = rows[0]["duration"]
    write_dataset(dataset, rows)
    [p] = only(verify(dataset), "wavs/ep1.001.wav")
    assert p.reason == "the same audio as wavs/ep1.000.wav (sha256 of the decoded samples)"


def test_duration_off_in_manifest(dataset: Path) -> None:
    rows = read_rows(dataset)
    rows[3]["duration"] += 0.050
    lines = (dataset / "manifest.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = json.dumps(rows[3], ensure_ascii=False) + "\n"
    (dataset / "manifest.jsonl").write_text("".join(lines), encoding="utf-8")
    problems = verify(dataset)
    wav = [p for p in problems if p.path == "wavs/ep2.001.wav"]
    assert [p.reason for p in wav] == [
        "lasts 1.500 s (24000 frames at 16000 Hz), manifest.jsonl line 4 says 1.550 s "
        "(more than 10 ms apart)"
    ]
    # metadata.csv still says 1.5: the disagreement is named too
    assert any(
        p.path == "metadata.csv" and "line 5 (wavs/ep2.001.wav): duration '1.5'" in p.reason
        for p in problems
    ), problems


def test_duration_within_tolerance(dataset: Path) -> None:
    rows = read_rows(dataset)
    rows[3]["duration"] += 0.009
    write_dataset(dataset, rows)
    assert verify(dataset) == []


def test_csv_text_disagrees(dataset: Path) -> None:
    path = dataset / "metadata.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("감사합니다", "고맙습니다"), encoding="utf-8")
    [p] = only(verify(dataset), "metadata.csv")
    assert p.reason == (
        "line 6 (wavs/ep3.000.wav): text '고맙습니다' differs from manifest.jsonl line 5: "
        "'감사합니다'"
    )


def test_txt_text_and_order(dataset: Path) -> None:
    path = dataset / "metadata.txt"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0] = "ep1.000|안녕|안녕\n"
    lines[4], lines[5] = lines[5], lines[4]
    path.write_text("".join(lines), encoding="utf-8")
    reasons = [p.reason for p in only(verify(dataset), "metadata.txt")]
    assert reasons == [
        "line 1 (wavs/ep1.000.wav): text '안녕' differs from manifest.jsonl line 1: '안녕하세요'",
        "rows not in manifest.jsonl's order: row 5 is 'ep4.000', manifest.jsonl has 'ep3.000'",
    ]


def test_txt_holds_no_pipe_inside_a_field(dataset: Path) -> None:
    """The '|' of "반갑습니다 | 네" is a space in metadata.txt and verify compares with that."""
    lines = (dataset / "metadata.txt").read_text(encoding="utf-8").splitlines()
    assert lines[1] == "ep1.001|반갑습니다 네|반갑습니다 네"
    assert all(len(line.split("|")) == 3 for line in lines)
    assert verify(dataset) == []


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        ("ep1.001|반갑습니다 | 네|반갑습니다 | 네", 5),  # the text's '|' written as it is
        ("ep1.001|반갑습니다|네|반갑습니다 네", 4),
        ("ep1.001|반갑습니다 네", 2),
    ],
    ids=["pipe-written-as-is", "four-fields", "two-fields"],
)
def test_txt_line_without_three_fields_is_named(dataset: Path, line: str, fields: int) -> None:
    path = dataset / "metadata.txt"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = line + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    problems = only(verify(dataset), "metadata.txt")
    assert str(problems[0]) == (
        f"metadata.txt: line 2: {fields} '|'-separated field(s), not 3 (id|text|normalized_text)"
    )
    proc = run_malmoi("verify", str(dataset))
    assert proc.returncode != 0 and str(problems[0]) in proc.stdout + proc.stderr


def test_csv_missing_row(dataset: Path) -> None:
    path = dataset / "metadata.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]), encoding="utf-8")
    [p] = only(verify(dataset), "metadata.csv")
    assert p.reason == "1 id(s) of manifest.jsonl not listed: ep4.000"


def test_source_in_two_splits(dataset: Path) -> None:
    rows = read_rows(dataset)
    rows[3]["split"] = "test"
    write_dataset(dataset, rows)
    [p] = only(verify(dataset), "manifest.jsonl")
    assert p.reason == (
        "source_id 'ep2' is in 2 splits: test (1: wavs/ep2.001.wav); train (1: wavs/ep2.000.wav)"
    )


def test_unknown_split(dataset: Path) -> None:
    rows = read_rows(dataset)
    rows[4]["split"] = "dev"
    write_dataset(dataset, rows)
    [p] = only(verify(dataset), "manifest.jsonl")
    assert p.reason == "line 5 (wavs/ep3.000.wav): split 'dev' is not train, validation, test"


def test_duration_above_limit(dataset: Path) -> None:
    info = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    info["limits"]["max_duration"] = 1.2
    (dataset / "dataset.json").write_text(json.dumps(info), encoding="utf-8")
    problems = only(verify(dataset), "manifest.jsonl")
    assert [p.reason for p in problems] == [
        "line 2 (wavs/ep1.001.wav): duration 1.25 is above limits.max_duration = 1.2",
        "line 4 (wavs/ep2.001.wav): duration 1.5 is above limits.max_duration = 1.2",
    ]


def test_score_limits(dataset: Path) -> None:
    """A score below its limit, and a null score under a set limit, are problems."""
    info = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    info["limits"]["min_snr_db"] = 22.5
    info["limits"]["min_dnsmos_ovrl"] = 3.0
    (dataset / "dataset.json").write_text(json.dumps(info), encoding="utf-8")
    reasons = [p.reason for p in only(verify(dataset), "manifest.jsonl")]
    assert reasons == [
        "line 1 (wavs/ep1.000.wav): snr_db 20 is below limits.min_snr_db = 22.5",
        "line 2 (wavs/ep1.001.wav): snr_db 21 is below limits.min_snr_db = 22.5",
        "line 3 (wavs/ep2.000.wav): snr_db 22 is below limits.min_snr_db = 22.5",
        "line 3 (wavs/ep2.000.wav): dnsmos_ovrl is null but dataset.json sets "
        "limits.min_dnsmos_ovrl = 3.0",
    ]


def test_wrong_sample_rate(dataset: Path) -> None:
    wav = dataset / "wavs" / "ep3.000.wav"
    audio, _ = sf.read(wav, dtype="int16")
    resampled = np.interp(np.arange(round(1.10 * 22050)) * SR / 22050, np.arange(audio.size), audio)
    sf.write(wav, resampled.astype(np.int16), 22050, subtype="PCM_16")  # same length, other rate
    [p] = only(verify(dataset), "wavs/ep3.000.wav")
    assert p.reason == "sample rate 22050 Hz, dataset.json says 16000 Hz"


def test_wrong_format_and_channels(dataset: Path) -> None:
    wav = dataset / "wavs" / "ep1.000.wav"
    stereo = np.stack([_audio(0, 1.0)] * 2, axis=1).astype(np.float32) / 32768
    sf.write(wav, stereo, SR, subtype="FLOAT")
    reasons = [p.reason for p in only(verify(dataset), "wavs/ep1.000.wav")]
    assert reasons == ["FLOAT samples, not 16-bit PCM (PCM_16)", "2 channels, not mono"]


def test_orphan_wav(dataset: Path) -> None:
    shutil.copyfile(dataset / "wavs" / "ep1.000.wav", dataset / "wavs" / "stray.wav")
    [p] = only(verify(dataset), "wavs/stray.wav")
    assert p.reason == "not listed in manifest.jsonl (orphan)"


def test_bad_json_line(dataset: Path) -> None:
    path = dataset / "manifest.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2][:40] + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    problems = verify(dataset)
    assert str(problems[0]).startswith("manifest.jsonl: line 3: not valid JSON (")
    # without that row, the others disagree and its WAV is an orphan: each names its file
    assert {p.path for p in problems} == {
        "manifest.jsonl",
        "metadata.csv",
        "metadata.txt",
        "wavs/ep2.000.wav",
    }


def test_missing_column_and_metadata_file(dataset: Path) -> None:
    rows = read_rows(dataset)
    del rows[0]["speaker"]
    (dataset / "manifest.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    (dataset / "metadata.txt").unlink()
    problems = [str(p) for p in verify(dataset)]
    assert "manifest.jsonl: line 1 (wavs/ep1.000.wav): missing column(s) speaker" in problems
    assert "metadata.txt: missing" in problems


def test_bad_dataset_json(dataset: Path) -> None:
    (dataset / "dataset.json").write_text('{"sample_rate": 16000,', encoding="utf-8")
    [p] = only(verify(dataset), "dataset.json")
    assert p.reason.startswith("line 1: not valid JSON")


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(NotADataset):
        verify(tmp_path)
    with pytest.raises(NotADataset):
        verify(tmp_path / "absent")


def test_cli(dataset: Path, tmp_path: Path) -> None:
    ok = run_malmoi("verify", str(dataset), timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{dataset}: ok — 6 slices, 0.00 hours, checked 6 WAVs")
    assert ok.stderr == ""

    os.truncate(dataset / "wavs" / "ep1.001.wav", 1000)
    (dataset / "wavs" / "ep4.000.wav").unlink()
    bad = run_malmoi("verify", str(dataset), timeout=60)
    assert bad.returncode == 1
    lines = bad.stderr.splitlines()
    assert lines[-1] == f"{len(lines) - 1} problems in {dataset}"
    assert any(line.startswith("wavs/ep1.001.wav: truncated") for line in lines), lines
    assert "wavs/ep4.000.wav: missing (listed on manifest.jsonl line 6)" in lines
    assert bad.stdout == ""

    none = run_malmoi("verify", str(tmp_path / "empty-dir"), timeout=60)
    assert none.returncode == 2
    assert "not a folder" in none.stderr


def test_an_empty_dataset_is_one_clear_problem(tmp_path: Path) -> None:
    from export.verify import verify

    (tmp_path / "manifest.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "dataset.json").write_text(
        '{"name": "x", "sample_rate": 16000, "limits": {}, "splits": {}}', encoding="utf-8"
    )
    assert [str(p) for p in verify(tmp_path)] == ["manifest.jsonl: no slices: the dataset is empty"]


def test_a_remembered_check_decodes_only_the_wavs_that_changed(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build's check (issue 24) keeps what each WAV decoded to: a rerun decodes none, a
    WAV written again is decoded again, and the problems are those of a full check."""
    from export import verify as verify_module

    decoded: list[str] = []
    real = verify_module._wav_facts

    def counted(path: Path) -> dict:
        decoded.append(path.name)
        return real(path)

    monkeypatch.setattr(verify_module, "_wav_facts", counted)
    first = check(dataset, remember=True)
    assert first.ok and len(decoded) == len(SLICES)
    decoded.clear()
    again = check(dataset, remember=True)
    assert decoded == [] and again.summary() == first.summary()
    wav = dataset / "wavs" / "ep2.001.wav"
    os.truncate(wav, wav.stat().st_size // 2)
    after = check(dataset, remember=True)
    assert decoded == ["ep2.001.wav"]
    assert after.problems and after.problems == check(dataset).problems
    assert (dataset / ".verify" / "audio.json").is_file()  # hidden: no orphan, no loader sees it
