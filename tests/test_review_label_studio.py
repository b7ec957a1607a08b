"""``malmoi review --to-label-studio / --from-label-studio``: the most doubtful slices out as
Label Studio tasks, a Label Studio export (its documented JSON and JSON_MIN formats) back in
as review decisions. A tiny build's tables are written by hand."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from review import decisions
from review import label_studio as ls
from review.slices import Build
from tests.test_review_ui import write_table

BELOW = "self_similarity 0.500 below threshold 0.800 (auto: self-enrollment)"
TEXTS = {"a": "가나다", "b": "라마바", "c": "사아자", "d": "차카타", "e": "파하"}


def row(rid: str, start: float, **more) -> dict:
    return {"id": rid, "parent_id": "v", "path": f"{rid}.wav", "duration": 2.0, "start": start,
            "stop": start + 2, "text": TEXTS[rid], "text_source": "subtitles", **more}  # fmt: skip


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Five slices: the speaker filter kept a (doubt 0.1), d (0.25) and c (0.02), rejected b
    (0.3); e never reached it (no threshold: not doubtful)."""
    out = tmp_path / "out"
    write_table(out / "segment/manifest.csv", [row(r, i * 3.0) for i, r in enumerate("abcde")])
    sim = {"a": 0.9, "b": 0.5, "c": 0.82, "d": 1.05}
    write_table(
        out / "speaker_filter/manifest.csv",
        [row(r, i * 3.0, self_similarity=sim[r], threshold=0.8) for i, r in enumerate("acd")],
    )
    write_table(
        out / "speaker_filter/rejected.csv",
        [row("b", 3.0, self_similarity=0.5, threshold=0.8, reason=BELOW)],
    )
    (out / "speaker_filter/threshold.json").write_text('{"column": "self_similarity"}')
    for stage in ("segment", "speaker_filter"):
        for rid in "abcde":
            (out / stage / f"{rid}.wav").write_bytes(b"RIFF")
    return out


def test_the_most_doubtful_slices_become_tasks(out: Path) -> None:
    build = Build(out)
    found = ls.tasks(build, 3, None)
    assert [t["data"]["slice_id"] for t in found] == ["c", "a", "d"]  # b lies 0.3 off, e: none
    assert [t["id"] for t in found] == [1, 2, 3]
    first = found[0]["data"]
    assert (first["text"], first["stage"]) == ("사아자", "speaker_filter")
    assert first["doubt"] == pytest.approx(0.02)
    wav = (out / "speaker_filter/c.wav").absolute()
    assert first["audio"] == "/data/local-files/?d=" + str(wav).lstrip("/")
    served = ls.tasks(build, 10, "http://127.0.0.1:8765/")
    assert [t["data"]["slice_id"] for t in served] == ["c", "a", "d", "b"]
    assert served[3]["data"]["audio"] == "http://127.0.0.1:8765/files/speaker_filter/b.wav"
    assert served[3]["data"]["reason"] == BELOW

    # the labeling config names what the tasks carry and what the export is read by
    view = ET.fromstring(ls.LABEL_CONFIG)
    assert view.find("Audio").attrib == {"name": "audio", "value": "$audio"}
    choices = view.find("Choices")
    assert (choices.get("name"), choices.get("toName")) == (ls.DECISION, "audio")
    assert [c.get("value") for c in choices.findall("Choice")] == ["keep", "reject"]
    area = view.find("TextArea")
    assert (area.get("name"), area.get("toName"), area.get("value")) == (ls.TEXT, "audio", "$text")


def annotation(when: str, verdict: str | None, text: str | None, cancelled: bool = False) -> dict:
    """An annotation as Label Studio's JSON export writes it (docs: export.md, "Label Studio
    JSON format of annotated tasks"; Choices and TextArea results per their tag pages)."""
    result = []
    if verdict is not None:
        result.append({"id": "r1", "from_name": "decision", "to_name": "audio",
                       "type": "choices", "origin": "manual",
                       "value": {"choices": [verdict]}})  # fmt: skip
    if text is not None:
        result.append({"id": "r2", "from_name": "text", "to_name": "audio",
                       "type": "textarea", "origin": "manual",
                       "value": {"text": [text]}})  # fmt: skip
    return {"id": 100, "completed_by": 1, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": when, "updated_at": when, "lead_time": 3.2,
            "task": 1}  # fmt: skip


def test_a_label_studio_export_becomes_decisions_through_the_cli(out: Path) -> None:
    from malmoi.cli import build_app

    runner = CliRunner()
    tasks_file = out.parent / "ls/tasks.json"
    done = runner.invoke(build_app(), ["review", str(out), "--to-label-studio", str(tasks_file)])
    assert done.exit_code == 0, done.output
    assert "4 tasks" in done.output
    assert (out.parent / "ls/tasks.xml").read_text() == ls.LABEL_CONFIG
    sent = {t["data"]["slice_id"]: t for t in json.loads(tasks_file.read_text())}
    assert set(sent) == {"a", "b", "c", "d"}

    def exported(slice_id: str, *annotations: dict) -> dict:
        task = sent[slice_id]
        stamp = "2026-12-01T09:00:00Z"
        return {**task, "annotations": list(annotations), "predictions": [], "project": 7,
                "created_at": stamp, "updated_at": stamp}  # fmt: skip

    export = [
        exported("c", annotation("2026-12-01T10:00:00Z", "reject", TEXTS["c"])),
        exported("a", annotation("2026-12-01T10:00:00Z", "keep", "고친 글")),
        exported(
            "b",
            annotation("2026-12-01T10:00:00Z", "keep", None, cancelled=True),
            annotation("2026-12-01T09:30:00Z", None, None),  # submitted empty: says nothing
        ),
        # the later annotation wins, wherever it stands in the list
        exported(
            "d",
            annotation("2026-12-01T12:00:00Z", "keep", TEXTS["d"]),
            annotation("2026-12-01T11:00:00Z", "reject", "틀린 글"),
        ),
    ]
    unchanged = {d.id: d.text for d in ls.decisions_from_export(export)}
    assert unchanged["c"] is None and unchanged["a"] == "고친 글"  # c's text as it was sent
    export_file = out.parent / "ls/export.json"
    export_file.write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")
    done = runner.invoke(build_app(), ["review", str(out), "--from-label-studio", str(export_file)])
    assert done.exit_code == 0, done.output
    assert "3 decisions" in done.output

    got = {k: (v.decision, v.text) for k, v in decisions.load(out).items()}
    assert got == {"c": ("reject", None), "a": ("keep", "고친 글"), "d": ("keep", None)}


def test_json_min_and_what_an_annotation_leaves_out(out: Path) -> None:
    """JSON_MIN (docs: export.md): the task's data and each control's value under its name —
    the text sent back unchanged is no edit; a choice alone keeps an earlier edit."""
    build = Build(out)
    build.decide("a", None, "먼저 고친 글", set_text=True)
    found = ls.decisions_from_export(
        [
            {
                "id": 1,
                "audio": "x",
                "slice_id": "c",
                "decision": "reject",
                "text": TEXTS["c"],
                "annotator": 1,
                "annotation_id": 5,
                "created_at": "2026-12-01T10:00:00Z",
            },
            {"id": 2, "audio": "y", "slice_id": "a", "decision": "keep"},
            {"id": 3, "audio": "z", "slice_id": "gone", "decision": {"choices": ["reject"]}},
        ]
    )
    assert [(d.id, d.decision) for d in found] == [
        ("c", "reject"),
        ("a", "keep"),
        ("gone", "reject"),
    ]
    assert ls.apply(build, found) == (2, ["gone"])
    got = {k: (v.decision, v.text) for k, v in decisions.load(out).items()}
    assert got == {"c": ("reject", None), "a": ("keep", "먼저 고친 글")}
