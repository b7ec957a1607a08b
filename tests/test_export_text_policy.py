"""Export's text policy (``export.text``: auto, subtitles, asr, none) on a lineage written by
hand: ingest, segment and transcribe folders with their manifest.csv, subtitles beside the
episode, and metadata.txt's third column in the Korean spoken form."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from export.stage import ExportStage
from malmoi.config import ExportConfig
from malmoi.stage import Item
from tests.test_export_stage import write

# The subtitles beside the episode. Their cues under s1 and s2 differ from the subtitle_text
# transcribe stored, so a mode that read the file again instead of the stored text is caught.
VTT = """WEBVTT

00:00:00.200 --> 00:00:01.800
파일의 자막 하나

00:00:02.200 --> 00:00:03.800
파일의 자막 둘

00:00:06.200 --> 00:00:07.800
3개 주세요
"""
# id -> (start, stop) in the episode
SPANS = {"s1": (0.0, 2.0), "s2": (2.0, 4.0), "s3": (4.0, 6.0), "s4": (6.0, 8.0), "s5": (8.0, 9.5)}
# transcribe's rows: s1 kept its subtitle, s2's subtitle disagreed (ASR text), s3 had none;
# s4 and s5 were not transcribed
TRANSCRIBED = {
    "s1": {
        "subtitle_text": "안녕하세요 여러분",
        "asr_text": "안녕하세요 여러분도",
        "text": "안녕하세요 여러분",
        "text_source": "subtitles",
        "cer": "0.1111",
    },
    "s2": {
        "subtitle_text": "전혀 다른 자막",
        "asr_text": "오늘 날씨가 좋네요",
        "text": "오늘 날씨가 좋네요",
        "text_source": "asr",
        "cer": "1.0",
    },
    "s3": {
        "subtitle_text": "",
        "asr_text": "사과 2개 주세요",
        "text": "사과 2개 주세요",
        "text_source": "asr",
        "cer": "",
    },
}
# s5: no subtitle cue and not transcribed, but a stage before export wrote a text
EARLIER_TEXT = {"s5": ("앞 단계의 글", "level")}

MODES = ("auto", "subtitles", "asr")
NO_TEXT = ("", "")
# id -> (text, text_source) with text: auto, subtitles, asr (none: no text for any slice)
# fmt: off
EXPECTED = {
    "s1": (("안녕하세요 여러분", "subtitles"), ("안녕하세요 여러분", "subtitles"),
           ("안녕하세요 여러분도", "asr")),
    "s2": (("오늘 날씨가 좋네요", "asr"), ("전혀 다른 자막", "subtitles"),
           ("오늘 날씨가 좋네요", "asr")),
    "s3": (("사과 2개 주세요", "asr"), NO_TEXT, ("사과 2개 주세요", "asr")),
    "s4": (("3개 주세요", "subtitles"), ("3개 주세요", "subtitles"), NO_TEXT),
    "s5": (("앞 단계의 글", "level"), NO_TEXT, NO_TEXT),
}
# fmt: on


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> None:
    """A stage folder's manifest.csv with ``rows`` (the union of their columns)."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (folder / "manifest.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Item]]:
    """A build's output folder (ingest, segment, transcribe) and the slices export reads."""
    root = tmp_path_factory.mktemp("text-policy")
    media = write(root / "episode.wav", 10.0, 16000, 1, 0.5)
    (root / "episode.ko.vtt").write_text(VTT, encoding="utf-8")
    out = root / "out"
    write_manifest(out / "ingest", [{"id": "ep", "source": str(media), "path": "ep.wav"}])
    segments = [
        {"id": rid, "parent_id": "ep", "source": str(media), "start": str(a), "stop": str(b)}
        | dict(zip(("text", "text_source"), EARLIER_TEXT.get(rid, ("", "")), strict=True))
        for rid, (a, b) in SPANS.items()
    ]
    write_manifest(out / "segment", segments)
    transcribed = [
        {"id": rid, "parent_id": "ep", "source": str(media), "asr_model": "whisper:base"} | cols
        for rid, cols in TRANSCRIBED.items()
    ]
    write_manifest(out / "transcribe", transcribed)
    slices = root / "slices"
    slices.mkdir()
    items = []
    for k, (rid, (a, b)) in enumerate(SPANS.items()):
        wav = write(slices / f"{rid}.wav", b - a, 16000, 1, 0.2 + 0.1 * k)  # no duplicates
        row = next((r for r in transcribed if r["id"] == rid), None) or segments[k]
        items.append(Item(rid, wav, str(media), f"k{rid}", dict(row)))
    return out, items


def exported(
    out: Path, items: list[Item], mode: str, name: str, unused: frozenset[str] = frozenset()
) -> Path:
    """The dataset folder ``name`` beside the stage folders, exported with ``text: mode``."""
    dataset = out.parent / name
    params = ExportConfig(sample_rate=16000, text=mode, dedup=False)
    report = ExportStage(params, dataset, lineage_root=out, unused_stages=unused).run(items)
    assert report.kept == len(items) and report.failed == 0
    return dataset


@pytest.mark.parametrize("mode", [*MODES, "none"])
def test_each_text_mode_gives_its_text_and_source(build, mode: str) -> None:
    out, items = build
    dataset = exported(out, items, mode, f"dataset-{mode}")
    rows = [json.loads(line) for line in (dataset / "manifest.jsonl").open(encoding="utf-8")]
    got = {r["id"]: (r["text"], r["text_source"]) for r in rows}
    if mode == "none":
        assert got == dict.fromkeys(SPANS, NO_TEXT)
    else:
        assert got == {rid: texts[MODES.index(mode)] for rid, texts in EXPECTED.items()}


def test_metadata_txt_holds_the_spoken_form_and_verify_checks_it(build) -> None:
    from export.verify import verify

    out, items = build
    dataset = exported(out, items, "auto", "dataset-txt")
    path = dataset / "metadata.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == [
        "s1|안녕하세요 여러분|안녕하세요 여러분",
        "s2|오늘 날씨가 좋네요|오늘 날씨가 좋네요",
        "s3|사과 2개 주세요|사과 두 개 주세요",
        "s4|3개 주세요|세 개 주세요",
        "s5|앞 단계의 글|앞 단계의 글",
    ]
    assert verify(dataset) == []
    lines[3] = "s4|3개 주세요|3개 주세요"  # the written form where the spoken one belongs
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert [str(p) for p in verify(dataset)] == [
        "metadata.txt: line 4 (wavs/s4.wav): normalized_text '3개 주세요' is not the spoken "
        "form of the text: '세 개 주세요'"
    ]


def test_dataset_json_and_card_say_what_transcribe_did(build) -> None:
    """The stage finds the transcribe folder in the lineage: the CERs of the exported slices
    with subtitles (s1, s2) in dataset.json, the card's Text section; no rules.json here, so no
    max_cer and no rule removed anything."""
    out, items = build
    dataset = exported(out, items, "auto", "dataset-card")
    info = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert info["transcribe"] == {
        "text": "auto",
        "max_cer": None,
        "cer": [0.1111, 1.0],
        "languages": {"(none)": 3},
        "removed": {},
        "examples": [  # the transcribed slices, by id
            {"id": "s1", "subtitle": "안녕하세요 여러분", "asr": "안녕하세요 여러분도",
             "cer": 0.1111, "language": ""},
            {"id": "s2", "subtitle": "전혀 다른 자막", "asr": "오늘 날씨가 좋네요", "cer": 1.0,
             "language": ""},
            {"id": "s3", "subtitle": "", "asr": "사과 2개 주세요", "cer": None, "language": ""},
        ],
    }  # fmt: skip
    card = (dataset / "README.md").read_text(encoding="utf-8")
    assert "median 0.556, quartiles 0.333 – 0.778." in card  # 0.1111 and 1.0
    assert "The transcribe rules removed no slice." in card


def test_a_transcribe_folder_the_build_does_not_use_gives_no_text(build) -> None:
    """transcribe turned off after a build that ran it: its folder is stale, the subtitles
    (then an earlier stage's text) are the text, and the card has no Text section."""
    out, items = build
    denoised = [  # the slices as the stage before transcribe wrote them
        Item(i.id, i.path, i.source, i.fingerprint, {k: i.row[k] for k in ("id", "parent_id")})
        for i in items
    ]
    dataset = exported(out, denoised, "auto", "dataset-off", frozenset({"transcribe"}))
    rows = [json.loads(line) for line in (dataset / "manifest.jsonl").open(encoding="utf-8")]
    assert {r["id"]: (r["text"], r["text_source"]) for r in rows} == {
        "s1": ("파일의 자막 하나", "subtitles"),
        "s2": ("파일의 자막 둘", "subtitles"),
        "s3": NO_TEXT,
        "s4": ("3개 주세요", "subtitles"),
        "s5": ("앞 단계의 글", "level"),
    }
    assert "transcribe" not in json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert "## Text" not in (dataset / "README.md").read_text(encoding="utf-8")
