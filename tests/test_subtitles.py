"""Transcripts from subtitles (transcribe/subtitles.py) and the demo's subtitle file."""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

import pytest

from malmoi.errors import ItemError
from transcribe.subtitles import (
    Cue,
    SubtitleText,
    TextEngine,
    parse_vtt,
    sidecar_subtitles,
    slice_text,
)

# YouTube automatic captions as yt-dlp writes them: a header with Kind/Language, each phrase
# first shown with inline word timestamps under a blank (" ") line, then rolled up: a 10 ms cue
# repeating it alone, then a cue repeating it above the next phrase. <SPACE> is a line of one
# space, as in the real files.
AUTO_VTT = """WEBVTT
Kind: captions
Language: ko

NOTE
자동 생성 자막 --> 이 줄은 자막이 아닙니다

STYLE
::cue { color: white }

00:00:00.000 --> 00:00:02.470 align:start position:0%
<SPACE>
안녕하세요<00:00:00.520><c> 여러분</c>

00:00:02.470 --> 00:00:02.480 align:start position:0%
안녕하세요 여러분
<SPACE>

00:00:02.480 --> 00:00:05.000 align:start position:0%
안녕하세요 여러분
오늘은<00:00:03.000><c> 날씨가</c><00:00:03.500><c>   맑고</c>

00:00:05.000 --> 00:00:05.010 align:start position:0%
오늘은 날씨가 맑고
<SPACE>

00:00:05.010 --> 00:00:07.000 align:start position:0%
오늘은 날씨가 맑고
R&amp;B<00:00:05.500><c> 음악을</c><00:00:06.000><c>&nbsp;들어요</c>
"""

MANUAL_VTT = """WEBVTT - 수동 자막

REGION
id:fred width:40%

1
00:01.000 --> 00:03.500 line:90%
<v 철수>안녕, <i>영희</i>야.</v>

intro-2
00:00:03.500 --> 00:00:05.000
<v.loud 영희><b>네.</b>

00:00:05.000 --> 00:00:06.000
네.

00:00:06.000 --> 00:00:07.000
<ruby>漢字<rt>한자</rt></ruby> &lt;책&gt;

00:00:07.000 --> 00:00:08.000
<c.yellow>   </c>
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("blank", [" ", ""], ids=["space-line", "empty-line"])
def test_auto_captions_rolling_lines_tags_entities_nfc(tmp_path: Path, blank: str) -> None:
    # YouTube's "blank" lines are one space (not a block's end); some copies have them empty
    vtt = AUTO_VTT.replace("<SPACE>", blank)
    nfd = unicodedata.normalize("NFD", vtt)
    assert nfd != vtt  # the input's Hangul really is decomposed
    cues = parse_vtt(_write(tmp_path / "auto.ko.vtt", nfd))
    assert cues == [
        Cue(0.0, 2.47, "안녕하세요 여러분"),
        Cue(2.48, 5.0, "오늘은 날씨가 맑고"),
        Cue(5.01, 7.0, "R&B 음악을 들어요"),
    ]
    for cue in cues:
        assert unicodedata.is_normalized("NFC", cue.text)
    # every spoken phrase once, in order, over the whole file
    assert slice_text(cues, 0, 7) == "안녕하세요 여러분 오늘은 날씨가 맑고 R&B 음악을 들어요"


def test_manual_subtitles_voices_italics_ids_repeats(tmp_path: Path) -> None:
    cues = parse_vtt(_write(tmp_path / "manual.vtt", MANUAL_VTT))
    assert cues == [
        Cue(1.0, 3.5, "안녕, 영희야."),
        Cue(3.5, 5.0, "네."),
        Cue(5.0, 6.0, "네."),  # plain subtitles: a line said twice stays twice
        Cue(6.0, 7.0, "漢字 <책>"),  # ruby reading dropped, entities decoded; empty cue dropped
    ]


def test_cue_straddling_a_boundary_goes_to_exactly_one_slice() -> None:
    cues = [Cue(0.0, 2.0, "하나"), Cue(2.0, 5.0, "둘"), Cue(5.0, 6.0, "셋")]
    # "둘" has 1.2 s in the first slice and 1.8 s in the second: the second gets it
    assert slice_text(cues, 0.0, 3.2) == "하나"
    assert slice_text(cues, 3.2, 6.0) == "둘 셋"
    # and the other way round
    assert slice_text(cues, 0.0, 3.8) == "하나 둘"
    assert slice_text(cues, 3.8, 6.0) == "셋"
    # whatever the boundary, including an exact half (3.5), each cue lands in exactly one
    for boundary in [0.5, 1.0, 2.0, 2.5, 3.5, 4.9, 5.0, 5.5]:
        words = (slice_text(cues, 0.0, boundary) + " " + slice_text(cues, boundary, 6.0)).split()
        assert sorted(words) == sorted(["하나", "둘", "셋"]), boundary
    # a long cue over three slices is in one of them, not lost
    long = [Cue(0.0, 10.0, "긴 문장")]
    texts = [slice_text(long, a, b) for a, b in [(0, 3), (3, 7), (7, 10)]]
    assert texts == ["", "긴 문장", ""]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1\n00:00:01.000 --> 00:00:02.000\n안녕\n", "not a WebVTT file"),
        ("WEBVTT\n\n00:00:01.000 --> 00:00:xx.000\n안녕\n", "bad WebVTT timestamp"),
        ("WEBVTT\n\n00:00:03.000 --> 00:00:02.000\n안녕\n", "before it starts"),
        ("WEBVTT\n\n00:00:01.000 -> 00:00:02.000\n안녕\n\n", None),  # no timing: no cue
    ],
)
def test_malformed_vtt_is_an_item_error_naming_the_file(
    tmp_path: Path, text: str, reason: str | None
) -> None:
    path = _write(tmp_path / "깨진.ko.vtt", text)
    if reason is None:
        assert parse_vtt(path) == []
        return
    with pytest.raises(ItemError) as exc:
        parse_vtt(path)
    message = str(exc.value)
    assert str(path) in message and reason in message and "\n" not in message
    bad = tmp_path / "binary.vtt"
    bad.write_bytes(b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n\xff\xfe\n")
    with pytest.raises(ItemError, match=r"binary\.vtt: not UTF-8"):
        parse_vtt(bad)


def test_subtitle_text_prefers_the_configured_language(tmp_path: Path) -> None:
    media = tmp_path / "ep.01.m4a"
    media.write_bytes(b"")
    vtt = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n{}\n"
    _write(tmp_path / "ep.01.en.vtt", vtt.format("hello"))
    ko = _write(tmp_path / "ep.01.ko.vtt", vtt.format("안녕"))
    _write(tmp_path / "ep.01.extra.ko.vtt", vtt.format("다른 파일"))  # another stem's
    _write(tmp_path / "ep.ko.vtt", vtt.format("다른 파일"))

    assert sidecar_subtitles(media, ["ko"]) == ko
    assert sidecar_subtitles(media, ["ja", "en"]) == tmp_path / "ep.01.en.vtt"
    assert sidecar_subtitles(media, ["ja"]) is not None  # none asked for: any there is
    assert sidecar_subtitles(tmp_path / "other.m4a", ["ko"]) is None
    _write(tmp_path / "solo.part.ko.vtt", vtt.format("다른 파일"))  # the stem "solo.part"'s
    assert sidecar_subtitles(tmp_path / "solo.m4a", ["ko"]) is None

    engine = SubtitleText(["ko"])
    assert isinstance(engine, TextEngine) and engine.name == "subtitles"
    assert engine.text(media, 0.0, 3.0) == "안녕"
    ko.unlink()  # parsed once per media file: the cache answers
    assert engine.text(media, 0.0, 3.0) == "안녕"
    assert engine.text(media, 3.0, 5.0) == ""
    assert engine.text(tmp_path / "other.m4a", 0.0, 3.0) == ""


def test_synthetic_source_writes_subtitles_of_its_sentences(tmp_path: Path) -> None:
    from ingest import synthetic
    from malmoi.config import SyntheticSource

    [media] = synthetic.generate(SyntheticSource(kind="synthetic", video=False), tmp_path)
    vtt = tmp_path / "말모이_데모.ko.vtt"
    assert vtt.is_file()
    assert sidecar_subtitles(media, ["ko"]) == vtt
    cues = parse_vtt(vtt)
    assert [c.text for c in cues] == synthetic.SENTENCES
    with (tmp_path / "reference" / "turns.csv").open(encoding="utf-8") as f:
        turns = list(csv.DictReader(f))
    assert [(c.start, c.stop) for c in cues] == [
        (float(t["start"]), float(t["stop"])) for t in turns
    ]
    # each sentence's slice carries its text
    for cue, sentence in zip(cues, synthetic.SENTENCES, strict=True):
        assert slice_text(cues, cue.start - 0.05, cue.stop + 0.05) == sentence

    # the media already there but not its subtitles (made before this feature): written
    first = vtt.read_text(encoding="utf-8")
    vtt.unlink()
    mtime = media.stat().st_mtime_ns
    assert synthetic.generate(SyntheticSource(kind="synthetic", video=False), tmp_path) == [media]
    assert media.stat().st_mtime_ns == mtime
    assert vtt.read_text(encoding="utf-8") == first
