"""The transcribe rules on constructed rows: each rule's reason, the speaking-rate fences, the
text chosen, and no text kept for no speech."""

from __future__ import annotations

from typing import Any

import pytest

from malmoi.config import TranscribeConfig
from transcribe.rules import partition, rate_fences, slice_reason
from transcribe.stage import rule_of
from transcribe.whisper import compression_ratio

P = TranscribeConfig()


def row(**kw: Any) -> dict[str, Any]:
    base = {
        "id": "x",
        "duration": 4.0,
        "asr_text": "안녕하세요 반갑습니다",
        "language": "ko",
        "language_prob": 0.9,
        "avg_logprob": -0.3,
        "no_speech_prob": 0.05,
        "compression_ratio": 1.1,
        "speech_seconds": 3.5,
        "chars_per_second": 2.5,
        "subtitle_text": "",
        "cer": None,
    }
    return base | kw


@pytest.mark.parametrize(
    ("changes", "start"),
    [
        ({"speech_seconds": 0.5}, "no speech (VAD: 0.50 s of 4.00 s"),
        ({"no_speech_prob": 0.9, "avg_logprob": -1.5}, "no speech (no-speech probability 0.90"),
        ({"language": "en", "language_prob": 0.8}, "language en (p 0.80 ≥ 0.5), not in ko"),
        ({"compression_ratio": 9.5}, "repetition loop (compression ratio 9.50 > 2.4)"),
        ({"chars_per_second": 40.0}, "runaway output (40.0 characters/s > 25)"),
        ({"asr_text": "  "}, "empty text on speech"),
    ],
)
def test_each_rule_names_its_reason(changes: dict[str, Any], start: str) -> None:
    assert (slice_reason(row(**changes), P) or "").startswith(start)


def test_what_passes_every_rule() -> None:
    assert slice_reason(row(), P) is None
    # Whisper's no-speech rule needs both: a confident text with a high no-speech probability
    assert slice_reason(row(no_speech_prob=0.9, avg_logprob=-0.2), P) is None
    # an uncertain language outside the list stays
    assert slice_reason(row(language="ja", language_prob=0.3), P) is None
    assert slice_reason(row(language="en", language_prob=0.8), P.model_copy(
        update={"languages": ["ko", "en"]})) is None  # fmt: skip


def test_the_seen_runaway_output_is_caught_by_its_compression_ratio() -> None:
    """Whisper base on espeak-ng's Korean voice (LIBRARY-NOTES): '1,500,000,000,…' for 6 s."""
    text = "1,500,000,000," + "000," * 200
    assert compression_ratio(text) > 10
    reason = slice_reason(row(asr_text=text, compression_ratio=compression_ratio(text)), P)
    assert (reason or "").startswith("repetition loop")
    assert compression_ratio("안녕하세요. 오늘 날씨가 정말 좋네요.") < 2.4


def test_rate_fences_are_the_quartiles_plus_and_minus_k_iqr() -> None:
    rates = [float(x) for x in range(1, 21)]  # quartiles 5.75 and 15.25 (linear), IQR 9.5
    assert rate_fences(rates, 1.5, 20) == (5.75 - 14.25, 15.25 + 14.25)
    assert rate_fences(rates, 1.5, 21) == (float("-inf"), float("inf"))  # too few slices
    assert rate_fences(rates, None, 4) == (float("-inf"), float("inf"))  # off


def test_partition_rejects_rate_outliers_and_chooses_the_text() -> None:
    rows = [row(id=f"s{i}", chars_per_second=6.0 + (i % 5) * 0.1) for i in range(20)]
    rows.append(row(id="fast", chars_per_second=20.0))  # under 25/s, far above the fence
    rows.append(row(id="sub", subtitle_text="안녕하세요 반갑습니다", cer=0.0, chars_per_second=6.2))
    rows.append(row(id="off", subtitle_text="전혀 다른 문장입니다", cer=0.8, chars_per_second=6.1))
    rows.append(row(id="quiet", speech_seconds=0.0, asr_text="you"))
    kept, rejected, fences = partition(rows, P)
    assert fences[1] < 20.0
    why = {r["id"]: r["reason"] for r in rejected}
    assert set(why) == {"fast", "quiet"}
    assert why["fast"].startswith("speaking rate 20.0 characters/s above the run's fence")
    got = {r["id"]: (r["text"], r["text_source"]) for r in kept}
    assert got["sub"] == ("안녕하세요 반갑습니다", "subtitles")
    assert got["off"] == ("안녕하세요 반갑습니다", "asr")  # the ASR text: the subtitle disagrees
    quiet = next(r for r in rejected if r["id"] == "quiet")
    assert quiet["text"] == "" and quiet["asr_text"] == "you"  # stored, never used as text
    strict = P.model_copy(update={"subtitle_mismatch": "reject"})
    _, rejected, _ = partition(rows, strict)
    assert {r["id"] for r in rejected} == {"fast", "quiet", "off"}


def test_rules_are_counted_by_name() -> None:
    assert rule_of("language fr (p 0.98 ≥ 0.5), not in en") == "language"
    assert rule_of("no speech (VAD: 0.00 s of 4.00 s is speech, under 20%)") == "no speech"
    assert rule_of("speaking rate 20.0 characters/s above the run's fence 7.1") == "speaking rate"
    assert rule_of("subtitle disagrees with the audio (CER 0.80 > 0.3)") == (
        "subtitle disagrees with the audio"
    )
