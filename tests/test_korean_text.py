"""Korean text of the transcribe stage: spoken forms (a hand-written table), CER and WER, and
``malmoi text``."""

from __future__ import annotations

import subprocess
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import MALMOI, child_env, run_malmoi
from transcribe.cer import cer, normalize_for_cer, wer, words_for_wer
from transcribe.normalize import native, sino, spoken

TABLE = Path(__file__).parent / "data" / "korean_spoken.tsv"
ACRONYMS = "[acronyms]"  # a note starting so: the case is read with acronyms=True


def table() -> list[tuple[str, str, str]]:
    """The rows of tests/data/korean_spoken.tsv: written, spoken (by hand), note."""
    lines = TABLE.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["written", "spoken", "note"]
    rows = [tuple(line.split("\t")) for line in lines[1:] if line.strip()]
    assert all(len(r) == 3 for r in rows)
    return rows  # type: ignore[return-value]


CASES = table()


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize(
    ("written", "expected", "note"),
    CASES,
    ids=[f"{i}-{w.strip()}" for i, (w, _, _) in enumerate(CASES)],
)
def test_spoken(written: str, expected: str, note: str) -> None:
    assert spoken(written, acronyms=note.startswith(ACRONYMS)) == expected, note


def test_spoken_is_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "사과 3개")
    assert decomposed != "사과 3개"
    assert spoken(decomposed) == "사과 세 개"


@pytest.mark.parametrize(
    ("n", "words"),
    [(0, "영"), (1, "일"), (10, "십"), (11, "십일"), (110, "백십"), (10000, "만"), (11000, "만 천"),
     (20000, "이만"), (100000000, "일억"), (100010000, "일억 만"), (2024, "이천이십사")],
)  # fmt: skip
def test_sino(n: int, words: str) -> None:
    assert sino(n) == words


@pytest.mark.parametrize(
    ("n", "words", "alone"),
    [(1, "한", "하나"), (2, "두", "둘"), (3, "세", "셋"), (4, "네", "넷"), (20, "스무", "스물"),
     (21, "스물한", "스물하나"), (99, "아흔아홉", "아흔아홉")],
)  # fmt: skip
def test_native(n: int, words: str, alone: str) -> None:
    assert native(n) == words
    assert native(n, before_counter=False) == alone


# CER: expected values counted by hand (edits / syllables of the reference)
@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("안녕하세요", "안녕하세오", 0.2),  # one substitution in five
        ("안녕하세요", "안녕 하세요", 0.0),  # spacing
        ("안녕하세요.", "안녕하세요!", 0.0),  # punctuation
        ("사과 3개", "사과 세 개", 0.0),  # written and spoken forms
        ("2,000원", "이천 원", 0.0),
        ("오늘은 3월 1일입니다", "오늘은 삼월 일일입니다", 0.0),
        ("010-1234-5678", "공일공 일이삼사 오육칠팔", 0.0),
        ("가나다라", "가나다라마바", 0.5),  # two insertions in four
        ("가나다라", "나다라", 0.25),  # one deletion in four
        ("가나다", "다나가", 2 / 3),  # two substitutions in three
        ("안녕", "", 1.0),
        ("", "", 0.0),
        ("", "뭐", 1.0),
        ("...", "", 0.0),  # only punctuation: an empty reference
    ],
)
def test_cer(ref: str, hyp: str, expected: float) -> None:
    assert cer(ref, hyp) == pytest.approx(expected)


def test_normalize_for_cer() -> None:
    assert normalize_for_cer(" 안녕,  하세요! (3개) ") == "안녕하세요세개"
    assert normalize_for_cer("50%") == "오십퍼센트"  # the symbol is read before symbols go


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("the cat sat", "the cat sat", 0.0),
        ("The cat sat.", "the cat, sat", 0.0),  # case and punctuation
        ("the cat sat on the mat", "the cat sit on mat", 2 / 6),  # a substitution, a deletion
        ("don't stop", "dont stop", 0.5),
        ("hello world", "", 1.0),
        ("", "", 0.0),
        ("", "hello", 1.0),
    ],
)
def test_wer(ref: str, hyp: str, expected: float) -> None:
    assert wer(ref, hyp) == pytest.approx(expected)


def test_words_for_wer() -> None:
    assert words_for_wer("'Hello', she said — don't!") == ["hello", "she", "said", "don't"]


def test_cli_normalize() -> None:
    """``malmoi text normalize`` answers each line as it comes (stdin still open)."""
    child = subprocess.Popen(
        [*MALMOI, "text", "normalize"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=child_env({"PYTHONIOENCODING": "utf-8"}),
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        for line, want in [
            ("3개 사과", "세 개 사과"),
            ("  2024년 3월 1일", "이천이십사 년 삼 월 일 일"),
        ]:
            child.stdin.write(line + "\n")
            child.stdin.flush()
            assert child.stdout.readline() == want + "\n"
        child.stdin.write("KBS 뉴스\n")
        child.stdin.close()
        assert child.stdout.read() == "KBS 뉴스\n"
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()


def test_cli_normalize_acronyms() -> None:
    from typer.testing import CliRunner

    from malmoi.cli import build_app

    result = CliRunner().invoke(
        build_app(), ["text", "normalize", "--acronyms"], input="KBS 뉴스\n"
    )
    assert result.exit_code == 0, result.output
    assert result.output == "케이비에스 뉴스\n"


def test_cli_cer() -> None:
    done = run_malmoi("text", "cer", "안녕하세요", "안녕하세오")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.2000"
    done = run_malmoi("text", "cer", "--details", "사과 3개.", "사과 세 개")
    assert done.stdout.splitlines() == ["ref: 사과세개", "hyp: 사과세개", "0.0000"]
