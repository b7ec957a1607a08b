"""The card's "Text" section (export.transcripts, export.card) from a transcribe folder written
by hand: hours by source of the text, the CER of subtitles against ASR, the languages detected
and what each transcribe rule removed. Every expected number is worked out by hand below."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from export.card import render_card
from export.transcripts import transcribe_summary
from malmoi.lineage import Lineage
from tests.test_export_card import table

# the exported slices: id, seconds, transcribe's text_source ('' = no text), subtitle CER
EXPORTED = [
    ("a1", 2.0, "subtitles", 0.0),
    ("a2", 3.0, "subtitles", 0.2),
    ("a3", 4.0, "asr", 0.5),
    ("a4", 5.0, "asr", 0.9),
    ("a5", 6.0, "asr", None),  # no subtitle
    ("a6", 1.0, "", None),
]
# kept by transcribe, left out by export (its CER is not the dataset's)
NOT_EXPORTED = ("b1", 2.0, "subtitles", 0.05)
# transcribe's rejected rows: id, seconds, language, reason
REJECTED = [
    ("r1", 2.0, "en", "language en (p 0.95 ≥ 0.5), not in ko"),
    ("r2", 3.0, "en", "language en (p 0.91 ≥ 0.5), not in ko"),
    ("r3", 1.0, "ja", "language ja (p 0.80 ≥ 0.5), not in ko"),
    ("r4", 1.0, "zh", "language zh (p 0.70 ≥ 0.5), not in ko"),
    ("r5", 2.0, "fr", "language fr (p 0.60 ≥ 0.5), not in ko"),
    ("r6", 1.0, "de", "language de (p 0.55 ≥ 0.5), not in ko"),
    ("r7", 4.0, "", "no speech (VAD: 0.10 s of 4.00 s is speech, under 50%)"),
    ("r8", 2.5, "ko", "repetition loop (compression ratio 3.10 > 2.4)"),
    ("r9", 3.5, "ko", "speaking rate 30.1 characters/s above the run's fence 20.0"),
    ("r10", 1.5, "ko", "no speech (no-speech probability 0.90 > 0.6, average log-probability "
     "-1.50 < -1)"),
]  # fmt: skip
RULES = {
    "settings": {"max_cer": 0.3, "languages": ["ko"]},
    "rate_fences": [2.0, 20.0],
    "kept": 7,
    "rejected": 10,
    "rejected_by_rule": {"language": 6, "no speech": 2, "repetition loop": 1, "speaking rate": 1},
}


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def readme(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("card-text") / "out"
    kept = [
        {
            "id": rid,
            "parent_id": "ep",
            "duration": seconds,
            "language": "ko",
            "asr_model": "whisper:base",
            "subtitle_text": "" if cer is None else "자막",
            "asr_text": f"들은 말 {rid}",
            "cer": "" if cer is None else cer,
            "text": "말" if source else "",
            "text_source": source,
        }
        for rid, seconds, source, cer in [*EXPORTED, NOT_EXPORTED]
    ]
    write_csv(out / "transcribe" / "manifest.csv", kept)
    write_csv(
        out / "transcribe" / "rejected.csv",
        [
            {"id": rid, "parent_id": "ep", "duration": s, "language": lang, "reason": why}
            for rid, s, lang, why in REJECTED
        ],
    )
    (out / "transcribe" / "rules.json").write_text(json.dumps(RULES), encoding="utf-8")
    rows = [
        {
            "id": rid,
            "parent_id": rid,  # as the export stage writes it: the item's id
            "audio_filepath": f"wavs/{rid}.wav",
            "duration": seconds,
            "text": "말" if source else "",
            "text_source": source,
            "speaker": "spk",
            "gender": "female",
            "source_id": "ep",
            "split": "train",
        }
        for rid, seconds, source, _ in EXPORTED
    ]
    summary = transcribe_summary(Lineage(out), rows, "auto")
    assert summary is not None
    info = {"name": "ds", "sample_rate": 16000, "transcribe": summary}
    return render_card("ds", rows, info)


def test_hours_by_source_of_the_text(readme: str) -> None:
    # subtitles a1 + a2 = 5 s, asr a3 + a4 + a5 = 15 s, none a6 = 1 s
    assert table(readme, "### Source of the text") == [
        {"text from": "subtitles", "slices": "2", "hours": "0.001", "h:mm:ss": "0:00:05"},
        {"text from": "asr", "slices": "3", "hours": "0.004", "h:mm:ss": "0:00:15"},
        {"text from": "none", "slices": "1", "hours": "0.000", "h:mm:ss": "0:00:01"},
    ]
    assert "Each slice's text is the transcribe stage's choice" in readme
    assert "(CER at most `max_cer` 0.3)" in readme


def test_cer_of_the_exported_slices_with_subtitles(readme: str) -> None:
    # CERs 0, 0.2, 0.5, 0.9 (b1's 0.05 is not exported): quartiles by linear interpolation at
    # 0.75, 1.5, 2.25 of the sorted list: 0.15, 0.35, 0.6; 0 and 0.2 are within 0.3
    assert (
        "CER of the subtitle against the ASR text over the 4 slices with subtitles: median "
        "0.350, quartiles 0.150 – 0.600; 2 of 4 (50%) within `max_cer` 0.3." in readme
    )


def test_what_asr_heard_in_the_first_exported_slices(readme: str) -> None:
    head = ["slice", "subtitle", "ASR", "language", "CER"]
    assert table(readme, "### What ASR heard") == [
        dict(zip(head, cells, strict=True))
        for cells in [
            ["a1", "자막", "들은 말 a1", "ko", "0.00"],
            ["a2", "자막", "들은 말 a2", "ko", "0.20"],
            ["a3", "자막", "들은 말 a3", "ko", "0.50"],
            ["a4", "자막", "들은 말 a4", "ko", "0.90"],
            ["a5", "—", "들은 말 a5", "ko", "—"],
        ]
    ]


def test_languages_over_every_judged_slice(readme: str) -> None:
    # kept: 7 ko; rejected: en 2, ja, zh, fr, de, ko 3 and one with none; ties by name
    assert "The language Whisper detected in the 17 slices transcribe judged" in readme
    assert table(readme, "### Languages detected") == [
        {"language": "ko", "slices": "10"},
        {"language": "en", "slices": "2"},
        {"language": "(none)", "slices": "1"},
        {"language": "de", "slices": "1"},
        {"language": "fr", "slices": "1"},
        {"language": "other (2 languages)", "slices": "2"},
    ]


def test_what_each_rule_removed(readme: str) -> None:
    # language 2+3+1+1+2+1 = 10 s, no speech 4+1.5 = 5.5 s, 2.5 s, 3.5 s
    assert table(readme, "### Removed by the transcribe rules") == [
        {"rule": "language", "slices": "6", "hours": "0.003", "h:mm:ss": "0:00:10"},
        {"rule": "no speech", "slices": "2", "hours": "0.002", "h:mm:ss": "0:00:06"},
        {"rule": "repetition loop", "slices": "1", "hours": "0.001", "h:mm:ss": "0:00:02"},
        {"rule": "speaking rate", "slices": "1", "hours": "0.001", "h:mm:ss": "0:00:04"},
    ]


def test_no_transcribe_folder_no_text_section(tmp_path: Path) -> None:
    assert transcribe_summary(Lineage(tmp_path), [{"id": "a1"}], "auto") is None
    card = render_card("ds", [], {"name": "ds", "sample_rate": 16000})
    assert "## Text" not in card
