"""The batched Whisper engine (transcribe/whisper.py) on the cases that broke it: a slice of
several sentences (decoded without timestamp tokens, Whisper base stopped after the first) and
word alignment in a batch holding a slice whose tokens are all timestamps."""

from pathlib import Path

import numpy as np
import pytest

from malmoi.audio import read_audio
from tests.conftest import MODEL_CACHE, model_or_skip
from transcribe.whisper import SAMPLE_RATE, WhisperEngine


@pytest.fixture(scope="module")
def whisper_engine() -> WhisperEngine:
    from malmoi.models import ModelStore

    model = model_or_skip(lambda: ModelStore(MODEL_CACHE).path("whisper:base"), "Whisper base")
    return WhisperEngine(model, threads=2, batch_size=8)


@pytest.mark.network
def test_a_slice_of_three_sentences_is_transcribed_whole(
    whisper_engine: WhisperEngine, shared: Path
) -> None:
    """lamartine.wav from 5 s to its end (9.6 s): three lines of verse. Without timestamp
    tokens the batched decode gave the first line only (7 words: "Ma soif d'aimer est enfin à
    souvi."); with them, as ``WhisperModel.transcribe``, all three (27 words, the last
    "connu.")."""
    audio = read_audio(shared / "data/ina/lamartine.wav", SAMPLE_RATE)
    (t,) = whisper_engine.transcribe([audio[5 * SAMPLE_RATE :]], "fr")
    assert len(t.text.split()) >= 20 and "connu" in t.text, t.text
    assert t.words and t.words[-1]["end"] > 8.0, t.words[-3:]


@pytest.mark.network
def test_word_times_survive_a_slice_without_text_tokens(whisper_engine: WhisperEngine) -> None:
    """A batch of two: one slice decoded to timestamps and words, the other to timestamp tokens
    only (possible now that timestamps are decoded): the words of the first are aligned, the
    second has none."""
    from faster_whisper.audio import pad_or_trim

    engine = whisper_engine
    m = engine.model
    rng = np.random.default_rng(0)
    audios = [(0.01 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32) for _ in range(2)]
    features = np.stack([pad_or_trim(m.feature_extractor(a)[..., :-1]) for a in audios])
    encoder_output = m.encode(features)
    tokenizer = engine._tokenizer("en")
    ts = tokenizer.timestamp_begin
    text = tokenizer.encode(" Hello there")
    outputs = [{"tokens": [ts, *text, ts + 100]}, {"tokens": [ts, ts]}]
    options = engine._options(tokenizer, multilingual=False)
    words = engine._words(audios, outputs, ["Hello there", ""], tokenizer, encoder_output, options)
    assert [w["word"] for w in words[0]] == ["Hello", "there"], words
    assert words[1] == []
