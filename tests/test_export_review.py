"""Export honours a person's review (issue 23, :mod:`export.review`): a slice rejected in review
is left out with its reason, one kept is exported past export's limits and past a filter that
rejected it, an edited text replaces the text in the three metadata files (``text_source``
review); the decisions are outside the items' keys, so a changed decisions file is work for the
next run and nothing else is, and no earlier stage computes anything again.

First on plain WAVs (no build: limits, re-judging, undoing), then on a real build (the
synthetic source's two voices, the speaker filter keeping one) through ``malmoi export`` and
``malmoi build``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from export.review import REJECTED_IN_REVIEW
from export.stage import ExportStage
from export.verify import verify
from malmoi.config import ExportConfig
from malmoi.stage import Item
from review.decisions import Decision, append
from tests.conftest import build_from, run_malmoi
from tests.test_export_stage import write

EDITED = "사과 3개 주세요"
SPOKEN = "사과 세 개 주세요"  # metadata.txt's normalized text of EDITED


def manifest(dataset: Path) -> dict[str, dict]:
    """manifest.jsonl's rows by id."""
    lines = (dataset / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def metadata_csv(dataset: Path) -> dict[str, dict]:
    with (dataset / "metadata.csv").open(encoding="utf-8", newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def metadata_txt(dataset: Path) -> dict[str, list[str]]:
    lines = (dataset / "metadata.txt").read_text(encoding="utf-8").splitlines()
    return {fields[0]: fields[1:] for fields in (line.split("|") for line in lines)}


def rejected(folder: Path) -> dict[str, str]:
    """A stage folder's rejected.csv: reason by id."""
    path = folder / "rejected.csv"
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as fh:
        return {r["id"]: r["reason"] for r in csv.DictReader(fh)}


def stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((folder / "wavs").glob("*.wav"))}


# --- on plain WAVs -----------------------------------------------------------------------------


@pytest.fixture()
def plain(tmp_path: Path) -> tuple[Path, Path]:
    """Three slices (c under the 1-s limit) and the folder a review of them is kept in."""
    folder = tmp_path / "slices"
    folder.mkdir()
    write(folder / "a.wav", 2.0, 22050, 1, 0.5)
    write(folder / "b.wav", 3.0, 16000, 1, 0.4)
    write(folder / "c.wav", 0.4, 22050, 1, 0.3)
    return folder, tmp_path / "build"


def items(slices: Path) -> list[Item]:
    """The plain slices as export's inputs, each named by its file's stem."""
    return [Item(p.stem, p, str(p), f"k-{p.stem}") for p in sorted(slices.glob("*.wav"))]


def export(slices: Path, review_root: Path, out: Path) -> tuple[int, int]:
    """An export of the plain slices: what pending said, then what the run processed."""
    params = ExportConfig(sample_rate=22050, min_duration=1.0, text="none", dedup=False)
    todo = ExportStage(params, out, review_root=review_root).pending(items(slices), prune=True)
    report = ExportStage(params, out, review_root=review_root).run(items(slices), prune=True)
    assert report.failed == 0
    return todo, report.processed


def review_counts(dataset: Path) -> dict[str, int]:
    review = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["review"]
    return {k: review[k] for k in ("reviewed", "kept", "rejected", "edited")}


def test_a_rejection_and_an_edit_rewrite_the_metadata_and_no_audio(
    plain: tuple[Path, Path], tmp_path: Path
) -> None:
    """Neither needs a slice's audio: the changed decisions alone make the run not a no-op
    (its settings), which re-judges the rows and processes nothing."""
    slices, root = plain
    out = tmp_path / "dataset"
    assert export(slices, root, out) == (3, 3)
    assert set(manifest(out)) == {"a", "b"}
    assert rejected(out) == {"c": "duration 0.40 s under min_duration 1"}
    before = stamps(out)
    append(root, Decision("a", "reject"))
    append(root, Decision("b", "", EDITED))
    assert export(slices, root, out) == (1, 0)  # pending: the metadata are stale
    rows = manifest(out)
    assert set(rows) == {"b"} and not (out / "wavs/a.wav").exists()
    assert rejected(out) == {"a": REJECTED_IN_REVIEW, "c": "duration 0.40 s under min_duration 1"}
    assert (rows["b"]["text"], rows["b"]["text_source"]) == (EDITED, "review")
    cells = metadata_csv(out)["b"]
    assert (cells["text"], cells["text_source"]) == (EDITED, "review")
    assert metadata_txt(out)["b"] == [EDITED, SPOKEN]
    assert stamps(out) == {"b.wav": before["b.wav"]}  # no audio written
    assert review_counts(out) == {"reviewed": 2, "kept": 0, "rejected": 1, "edited": 1}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Review" in card and "| 2 | 0 | 1 | 1 |" in card
    assert verify(out) == []
    # the same decisions again: nothing to do; a repeated line (a new time) changes nothing
    append(root, Decision("a", "reject"))
    assert export(slices, root, out) == (0, 0)


def test_a_slice_kept_in_review_passes_the_limits(plain: tuple[Path, Path], tmp_path: Path) -> None:
    slices, root = plain
    out = tmp_path / "dataset"
    export(slices, root, out)
    append(root, Decision("c", "keep"))
    assert export(slices, root, out) == (1, 1)  # c: its WAV was never written
    rows = manifest(out)
    assert set(rows) == {"a", "b", "c"} and rejected(out) == {}
    assert rows["c"]["duration"] < 1.0 and (out / "wavs/c.wav").is_file()
    info = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert info["review"]["kept_past_limits"] == ["c"]
    assert review_counts(out) == {"reviewed": 1, "kept": 1, "rejected": 0, "edited": 0}
    assert verify(out) == []  # c is not held to the limit a person overrode


def test_undone_decisions_bring_back_the_audio_the_text_and_the_limits(
    plain: tuple[Path, Path], tmp_path: Path
) -> None:
    slices, root = plain
    out = tmp_path / "dataset"
    append(root, Decision("a", "reject"))
    append(root, Decision("b", "", EDITED))
    append(root, Decision("c", "keep"))
    export(slices, root, out)
    assert set(manifest(out)) == {"b", "c"} and rejected(out) == {"a": REJECTED_IN_REVIEW}
    assert manifest(out)["b"]["text"] == EDITED
    for rid in "abc":
        append(root, Decision(rid))  # undone
    # a (its WAV) and b (the text the stages gave it) are processed again; c is judged
    assert export(slices, root, out) == (2, 2)
    rows = manifest(out)
    assert set(rows) == {"a", "b"} and (rows["b"]["text"], rows["b"]["text_source"]) == ("", "")
    assert rejected(out) == {"c": "duration 0.40 s under min_duration 1"}
    assert not (out / "wavs/c.wav").exists() and (out / "wavs/a.wav").is_file()
    assert "review" not in json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert "Not reviewed" in (out / "README.md").read_text(encoding="utf-8")
    assert verify(out) == []
    assert export(slices, root, out) == (0, 0)


def test_verify_holds_a_slice_nobody_kept_to_the_limits(
    plain: tuple[Path, Path], tmp_path: Path
) -> None:
    """The exemption is the review's list, not a blanket one: a slice past the limit that the
    list does not name is still a problem."""
    slices, root = plain
    out = tmp_path / "dataset"
    append(root, Decision("c", "keep"))
    export(slices, root, out)
    info_path = out / "dataset.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    assert info["review"]["kept_past_limits"] == ["c"] and verify(out) == []
    info["review"]["kept_past_limits"] = []
    info_path.write_text(json.dumps(info), encoding="utf-8")
    problems = [str(p) for p in verify(out)]
    assert len(problems) == 1 and "(wavs/c.wav): duration" in problems[0], problems
    assert "below limits.min_duration = 1.0" in problems[0]


def table(folder: Path, name: str, rows: list[dict[str, str]]) -> None:
    """A stage folder's table ``name`` with ``rows`` (the union of their columns)."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (folder / name).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def test_a_kept_slice_transcribe_rejected_takes_its_audio_and_text_from_there(
    tmp_path: Path,
) -> None:
    """Written by hand: s1 segmented (2.0 s) then rejected by transcribe (1.5 s, its own file:
    the latest stage's audio wins) with transcribe's text; s2 has no audio anywhere."""
    out = tmp_path / "out"
    media = write(tmp_path / "episode.wav", 6.0, 16000, 1, 0.5)
    table(out / "ingest", "manifest.csv", [{"id": "ep", "source": str(media), "path": "ep.wav"}])
    (out / "segment").mkdir(parents=True)
    write(out / "segment/s1.wav", 2.0, 16000, 1, 0.3)
    segment = {"id": "s1", "parent_id": "ep", "source": str(media), "key": "k1"}
    cut = {"path": "s1.wav", "start": "1.0", "stop": "3.0"}
    table(out / "segment", "manifest.csv", [segment | cut])
    (out / "transcribe").mkdir()
    write(out / "transcribe/s1.wav", 1.5, 16000, 1, 0.2)
    heard = {"asr_model": "whisper:base", "text": "전사된 글", "text_source": "asr"}
    table(
        out / "transcribe",
        "rejected.csv",
        [segment | cut | heard | {"key": "k1t", "reason": "language en"}],
    )
    table(out / "transcribe", "manifest.csv", [])
    append(out, Decision("s1", "keep"))
    append(out, Decision("s2", "keep"))
    dataset = tmp_path / "dataset"
    params = ExportConfig(sample_rate=16000, text="auto", dedup=False, min_duration=2.0)
    report = ExportStage(params, dataset, lineage_root=out).run([], prune=True)
    assert (report.processed, report.failed) == (1, 0)
    row = manifest(dataset)["s1"]
    assert (row["text"], row["text_source"]) == ("전사된 글", "asr")
    assert abs(row["duration"] - 1.5) < 1e-3 and row["source_offset"] == 1.0
    review = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["review"]
    assert review["kept_past_filters"] == ["s1"] and review["kept_not_found"] == ["s2"]
    assert review["kept_past_limits"] == ["s1"]  # 1.5 s under min_duration 2
    assert verify(dataset) == []
    assert "Kept in review but left out, no audio of them left in the build: 1 slice" in (
        dataset / "README.md"
    ).read_text(encoding="utf-8")


# --- on a real build ---------------------------------------------------------------------------

EARLIER = ("ingest", "separate", "segment", "speaker_filter", "denoise")
AGAIN = "다시 고친 글"


def progress_stamps(out: Path) -> dict[str, tuple[int, int]]:
    """The earlier stages' progress.csv and manifest.csv times: unchanged when they did nothing."""
    return {
        s: (
            (out / s / "progress.csv").stat().st_mtime_ns,
            (out / s / "manifest.csv").stat().st_mtime_ns,
        )
        for s in EARLIER
    }


def filter_rejected(out: Path, exported: set[str]) -> str:
    """A whole slice the speaker filter rejected (below its threshold) whose audio it holds."""
    with (out / "speaker_filter/rejected.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if (
            "below threshold" in row["reason"]
            and not row["part_of"]
            and row["id"] not in exported
            and (out / "speaker_filter" / row["path"]).is_file()
        ):
            return row["id"]
    pytest.fail(f"no whole slice below the threshold with its audio: {rows}")


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A build (the synthetic source's two voices, the speaker filter keeping ko+m3; no
    transcribe: the subtitles are the text), then a review: the first exported slice rejected,
    the second's text edited, a slice the speaker filter rejected kept; then ``malmoi export``
    twice."""
    root = tmp_path_factory.mktemp("review-build")
    out = root / "out"
    cfg = {
        "name": "reviewtest",
        "output_dir": str(out),
        "sources": [{"kind": "synthetic", "video": False}],
        "separate": {"engine": "repet"},
        "segment": {"gender": "any", "gender_engine": "embedding", "min_duration": 1.0},
        "speaker_filter": {"references": [str(out / "raw/synthetic/reference/voices/ko+m3")]},
        "denoise": {"scores": False},
        "transcribe": {"enabled": False},
        "models": {"dir": os.environ["MALMOI_MODEL_DIR"]},
    }
    config = build_from(root, "reviewtest", cfg)
    dataset = out / "export"
    first = sorted(manifest(dataset))
    assert len(first) >= 3, first
    gone, edited = first[0], first[1]
    kept = filter_rejected(out, set(first))
    before = progress_stamps(out)
    wavs = stamps(dataset)
    append(out, Decision(gone, "reject"))
    append(out, Decision(edited, "", EDITED))
    append(out, Decision(kept, "keep"))
    exported = run_malmoi("export", str(config), cwd=root)
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-4000:]
    again = run_malmoi("export", str(config), cwd=root)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-4000:]
    return {
        "root": root,
        "config": config,
        "out": out,
        "dataset": dataset,
        "first": first,
        "gone": gone,
        "edited": edited,
        "kept": kept,
        "before": before,
        "wavs": wavs,
        "exported": exported,
        "again": again,
    }


def test_a_slice_rejected_in_review_is_left_out_with_its_reason(reviewed: dict) -> None:
    dataset, gone = reviewed["dataset"], reviewed["gone"]
    assert gone not in manifest(dataset) and gone not in metadata_csv(dataset)
    assert gone not in metadata_txt(dataset)
    assert not (dataset / f"wavs/{gone}.wav").exists()
    assert rejected(dataset)[gone] == REJECTED_IN_REVIEW


def test_an_edited_text_is_in_all_three_metadata_files(reviewed: dict) -> None:
    dataset, edited = reviewed["dataset"], reviewed["edited"]
    row = manifest(dataset)[edited]
    assert (row["text"], row["text_source"]) == (EDITED, "review")
    cells = metadata_csv(dataset)[edited]
    assert (cells["text"], cells["text_source"]) == (EDITED, "review")
    assert metadata_txt(dataset)[edited] == [EDITED, SPOKEN]
    assert stamps(dataset)[f"{edited}.wav"] == reviewed["wavs"][f"{edited}.wav"]  # not rewritten


def test_a_slice_the_speaker_filter_rejected_but_a_person_kept_is_exported(
    reviewed: dict,
) -> None:
    dataset, kept, out = reviewed["dataset"], reviewed["kept"], reviewed["out"]
    row = manifest(dataset)[kept]
    assert (dataset / row["audio_filepath"]).is_file() and kept in metadata_csv(dataset)
    assert kept in metadata_txt(dataset)
    assert kept in rejected(out / "speaker_filter")  # the filter's verdict stands there
    # its lineage is the filter's row: its place in the source and its similarity
    assert row["source_offset"] is not None and row["similarity"] is not None
    assert row["text_source"] in ("subtitles", "")  # no transcribe: the subtitles' text
    info = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert review_counts(dataset) == {"reviewed": 3, "kept": 1, "rejected": 1, "edited": 1}
    review = info["review"]
    assert review["kept_past_filters"] == [kept] and review["kept_not_found"] == []
    assert info["counts"]["slices"] == len(reviewed["first"])  # one out, one in
    card = (dataset / "README.md").read_text(encoding="utf-8")
    assert "## Review" in card and "| 3 | 1 | 1 | 1 |" in card
    assert "Kept although a filter had rejected them: 1 slice." in card


def test_verify_passes(reviewed: dict) -> None:
    proc = run_malmoi("verify", str(reviewed["dataset"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_no_earlier_stage_computed_and_a_second_export_has_nothing_to_do(
    reviewed: dict,
) -> None:
    assert progress_stamps(reviewed["out"]) == reviewed["before"]
    # only the kept slice was processed: the rejection and the edit came from the rows
    assert "export: 1 processed" in reviewed["exported"].stdout, reviewed["exported"].stdout
    assert "export: 0 processed" in reviewed["again"].stdout, reviewed["again"].stdout
    assert "nothing to do" in reviewed["again"].stdout


def test_a_changed_decisions_file_is_honoured_by_the_next_build(reviewed: dict) -> None:
    """Last (it changes the build): the text edited again and one more slice rejected, which
    need no audio: only the changed decisions file tells ``malmoi build`` (otherwise "every
    stage is finished") that export has work; no stage processes anything."""
    out, dataset = reviewed["out"], reviewed["dataset"]
    edited, kept, third = reviewed["edited"], reviewed["kept"], reviewed["first"][2]
    append(out, Decision(edited, "", AGAIN))
    append(out, Decision(third, "reject"))
    proc = run_malmoi("build", str(reviewed["config"]), cwd=reviewed["root"], timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "no flow run started" not in proc.stdout, proc.stdout
    for stage in (*EARLIER, "export"):  # (a build's stages rewrite their tables: no file times)
        assert f"{stage}: 0 processed" in proc.stdout, proc.stdout
    rows = manifest(dataset)
    assert third not in rows and not (dataset / f"wavs/{third}.wav").exists()
    assert rejected(dataset)[third] == REJECTED_IN_REVIEW
    assert (rows[edited]["text"], rows[edited]["text_source"]) == (AGAIN, "review")
    assert metadata_txt(dataset)[edited] == [AGAIN, AGAIN]
    assert kept in rows
    assert review_counts(dataset) == {"reviewed": 4, "kept": 1, "rejected": 2, "edited": 1}
    ok = run_malmoi("verify", str(dataset))
    assert ok.returncode == 0, ok.stdout + ok.stderr[-3000:]
