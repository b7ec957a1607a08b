"""The transcribe stage with the real model (Whisper base from PyPI): English text, languages,
no speech, subtitles checked against the audio, resume, and rules that re-partition stored rows
without the model."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest

from malmoi.config import TranscribeConfig
from malmoi.stage import Item
from tests.conftest import run_malmoi
from tests.media import write_wav
from transcribe.cer import wer
from transcribe.stage import TranscribeStage

# espeak-ng English with known text, in three voices
SENTENCES = [
    ("en-us", "The quick brown fox jumps over the lazy dog."),
    ("en+m3", "She sells sea shells by the sea shore."),
    ("en+f2", "Please call me tomorrow morning after breakfast."),
    ("en-us", "The weather was cold and the streets were empty."),
    ("en+m3", "We walked along the river until the sun went down."),
    ("en+f2", "Reading books is a good way to learn new words."),
]


def speak(voice: str, text: str, dest: Path, words_per_minute: int = 150) -> Path:
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(dest), text], check=True
    )
    return dest


def rows(folder: Path, table: str) -> dict[str, dict[str, str]]:
    with (folder / table).open(encoding="utf-8", newline="") as fh:
        return {r["id"].rsplit("-", 1)[0]: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """English sentences, a French reading, MUSAN music alone and digital silence."""
    from malmoi.audio import read_audio

    folder = tmp_path_factory.mktemp("asr-inputs")
    for i, (voice, text) in enumerate(SENTENCES):
        speak(voice, text, folder / f"en{i}.wav")
    mix = read_audio(shared / "data" / "ina" / "musanmix.wav", 16000)
    write_wav(folder / "music.wav", mix[: 8 * 16000], 16000)  # MUSAN music, 0-22.48 s
    write_wav(folder / "silence.wav", np.zeros(4 * 16000, dtype=np.float32), 16000)
    (folder / "french.wav").symlink_to(shared / "data" / "ina" / "lamartine.wav")
    return folder


@pytest.fixture(scope="module")
def cli_run(inputs: Path, whisper_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("asr") / "transcribe"
    proc = run_malmoi(
        "transcribe", *sorted(map(str, inputs.iterdir())), "--out", str(out),
        "--language", "auto", "--languages", "en",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_english_sentences_are_transcribed_within_15_percent_wer(cli_run: Path) -> None:
    kept = rows(cli_run, "manifest.csv")
    errors = []
    for i, (_, text) in enumerate(SENTENCES):
        row = kept[f"en{i}"]
        assert row["language"] == "en", row
        assert float(row["language_prob"]) > 0.5
        assert row["text_source"] == "asr" and row["text"] == row["asr_text"]
        assert row["words"].startswith("[{") and float(row["chars_per_second"]) > 5
        errors.append(wer(text, row["asr_text"]))
    # the corpus WER: word errors over the reference words
    words = [len(t.split()) for _, t in SENTENCES]
    assert sum(e * n for e, n in zip(errors, words, strict=True)) / sum(words) <= 0.15, errors


def test_french_is_found_and_rejected_outside_the_languages(cli_run: Path) -> None:
    row = rows(cli_run, "rejected.csv")["french"]
    assert row["language"] == "fr" and float(row["language_prob"]) > 0.9
    assert row["reason"].startswith("language fr") and "not in en" in row["reason"]
    assert "vie" in row["asr_text"].lower()  # it was transcribed, in French, and stored


def test_music_and_silence_are_no_speech_with_no_text(cli_run: Path) -> None:
    rejected = rows(cli_run, "rejected.csv")
    for name in ("music", "silence"):
        assert rejected[name]["reason"].startswith("no speech"), rejected[name]
        assert rejected[name]["text"] == "" and rejected[name]["text_source"] == ""
    assert set(rows(cli_run, "manifest.csv")) == {f"en{i}" for i in range(len(SENTENCES))}


def test_a_second_run_transcribes_nothing(cli_run: Path, inputs: Path) -> None:
    proc = run_malmoi(
        "transcribe", *sorted(map(str, inputs.iterdir())), "--out", str(cli_run),
        "--language", "auto", "--languages", "en",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 processed, 9 skipped" in proc.stderr, proc.stderr[-1000:]


def test_a_changed_rule_repartitions_without_loading_the_model(
    cli_run: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """languages en,fr keeps the French reading from its stored row: setup() (the model) is
    never called, no item is processed."""
    from ingest.local import discover
    from malmoi.verbs import MEDIA

    def no_model(self: TranscribeStage) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(TranscribeStage, "setup", no_model)
    params = TranscribeConfig(language="auto", languages=["en", "fr"])
    stage = TranscribeStage(params, cli_run)
    report = stage.run(list(discover(sorted(inputs.iterdir()), MEDIA)))  # as the verb finds them
    assert report.processed == 0 and report.skipped == 9
    assert stage.engine is None
    assert "french" in rows(cli_run, "manifest.csv")
    assert "french" not in rows(cli_run, "rejected.csv")


def _vtt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(t: float) -> str:
        return f"00:{int(t // 60):02d}:{t % 60:06.3f}"

    return "WEBVTT\n\n" + "\n".join(f"{stamp(a)} --> {stamp(b)}\n{text}\n" for a, b, text in cues)


def test_subtitles_are_checked_against_the_audio(tmp_path: Path, whisper_model: Path) -> None:
    """Two sentences in one media file, cut into two slices. With the right cues each slice
    keeps its subtitle (text_source subtitles); with the cues shifted by one sentence the second
    slice gets the first sentence's cue: a high CER, so it keeps the ASR text — or, with
    subtitle_mismatch reject, is rejected (a re-partition: the model is not run again)."""
    from malmoi.audio import read_audio

    first, second = SENTENCES[0][1], SENTENCES[4][1]
    a = read_audio(speak("en-us", first, tmp_path / "a.wav"), 16000)
    b = read_audio(speak("en+m3", second, tmp_path / "b.wav"), 16000)
    gap = np.zeros(8000, dtype=np.float32)
    talk = write_wav(tmp_path / "media" / "talk.wav", np.concatenate([a, gap, b]), 16000)
    cut = (len(a) + 4000) / 16000  # the slices meet in the middle of the gap
    end = (len(a) + len(gap) + len(b)) / 16000
    spans = {"talk.s1": (0.0, cut), "talk.s2": (cut, end)}
    items = []
    for sid, (start, stop) in spans.items():
        audio = read_audio(talk, 16000)[int(start * 16000) : int(stop * 16000)]
        path = write_wav(tmp_path / "slices" / f"{sid}.wav", audio, 16000)
        row = {"id": sid, "source": str(talk), "start": start, "stop": stop}
        items.append(Item(sid, path, str(talk), "k" + sid, row))
    vtt = talk.with_name("talk.en.vtt")
    a_end = len(a) / 16000
    right = [(0.0, a_end, first), (a_end + 0.5, end, second)]
    shift = a_end + 0.5
    params = TranscribeConfig(language="en", languages=["en"], subtitle_languages=["en"])

    vtt.write_text(_vtt(right), encoding="utf-8")
    out = tmp_path / "right"
    assert TranscribeStage(params, out).run(items).failed == 0
    kept = {r["id"]: r for r in csv.DictReader((out / "manifest.csv").open(encoding="utf-8"))}
    assert [kept[s]["text_source"] for s in spans] == ["subtitles", "subtitles"]
    assert [kept[s]["text"] for s in spans] == [first, second]
    assert all(float(kept[s]["cer"]) <= 0.3 for s in spans)

    vtt.write_text(_vtt([(s + shift, e + shift, t) for s, e, t in right]), encoding="utf-8")
    out = tmp_path / "shifted"
    assert TranscribeStage(params, out).run(items).failed == 0
    kept = {r["id"]: r for r in csv.DictReader((out / "manifest.csv").open(encoding="utf-8"))}
    assert kept["talk.s2"]["subtitle_text"] == first  # the wrong cue
    assert float(kept["talk.s2"]["cer"]) > 0.5
    assert kept["talk.s2"]["text_source"] == "asr" and wer(second, kept["talk.s2"]["text"]) < 0.3
    assert kept["talk.s1"]["subtitle_text"] == "" and kept["talk.s1"]["text_source"] == "asr"

    strict = params.model_copy(update={"subtitle_mismatch": "reject"})
    report = TranscribeStage(strict, out).run(items)
    assert report.processed == 0 and report.kept == 1
    rejected = list(csv.DictReader((out / "rejected.csv").open(encoding="utf-8")))
    assert [r["id"] for r in rejected] == ["talk.s2"]
    assert rejected[0]["reason"].startswith("subtitle disagrees with the audio (CER")


def test_whisper_base_repetition_loops_on_robotic_korean_are_rejected(
    tmp_path: Path, whisper_model: Path
) -> None:
    """Whisper base on espeak-ng's Korean voice counting, or repeating one syllable, loops:
    '팩이 맥, 성맥, 로맥, 로맥, …', '아하하하…', '다 다 다 …' (compression ratios 13–56 with
    the stage's decoding). The rule catches them; an ordinary sentence of the same voice is not
    taken for a loop."""
    texts = {
        "count": "백 이백 삼백 사백 오백 육백 칠백 팔백 구백 천",
        "man": "만 만 만 만 만 만 만 만 만 만",
        "ga": "가 가 가 가 가 가 가 가 가 가 가 가",
        "ra": "라 라 라 라 라 라 라 라 라 라 라 라 라 라",
        "weather": "오늘은 날씨가 맑겠습니다",
    }
    # espeak-ng's default rate (175): these loops were seen at that rate
    files = [speak("ko", text, tmp_path / f"{n}.wav", 175) for n, text in texts.items()]
    items = [Item(p.stem, p, str(p), "k" + p.stem) for p in files]
    params = TranscribeConfig(min_language_prob=1.0)  # the language rule off (as the demo)
    out = tmp_path / "out"
    assert TranscribeStage(params, out).run(items).failed == 0
    rejected = {r["id"]: r for r in csv.DictReader((out / "rejected.csv").open(encoding="utf-8"))}
    for name in ("count", "man", "ga", "ra"):
        assert rejected[name]["reason"].startswith("repetition loop (compression ratio"), name
        assert float(rejected[name]["compression_ratio"]) > 5
    kept = {r["id"] for r in csv.DictReader((out / "manifest.csv").open(encoding="utf-8"))}
    assert kept == {"weather"}
