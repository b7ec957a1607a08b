"""``malmoi eval separation``'s WER column: Whisper (base, language en) on espeak-ng English
with known text, clean, under MUSAN noise, and in a separation engine's vocals."""

import shutil
from pathlib import Path

import pytest

from eval.separation import build_mixtures, evaluate, table
from tests.conftest import MODEL_CACHE, model_or_skip


class Passthrough:
    """A "separation" that returns the mixture as the vocals (a real engine takes minutes on
    these shared cores; the WER column is what is tested here)."""

    def separate_file(self, mixture: Path, vocals: Path, accompaniment: Path) -> None:
        shutil.copyfile(mixture, vocals)
        shutil.copyfile(mixture, accompaniment)


@pytest.mark.network
def test_wer_column_is_present_and_sane(shared: Path, tmp_path: Path) -> None:
    """12 s of espeak-ng sentences over MUSAN noise at -5 dB. The clean speech must be heard
    well (WER ≤ 0.3), the mixture no better than the clean speech, the pass-through vocals
    exactly as the mixture; every WER a number in [0, 2]."""
    from malmoi.models import ModelStore
    from transcribe.whisper import WhisperEngine

    model = model_or_skip(lambda: ModelStore(MODEL_CACHE).path("whisper:base"), "Whisper base")
    asr = WhisperEngine(model, threads=2, word_timestamps=False)
    mixes = build_mixtures(
        shared, tmp_path / "mix", seconds=12, snrs=(-5.0,), kinds=("noise",), speech_kind="espeak"
    )
    assert mixes[0].text and len(mixes[0].text.split()) >= 12
    scores = evaluate({"passthrough": Passthrough()}, mixes, tmp_path / "out", asr=asr)
    (s,) = scores
    assert s.wer is not None and s.wer_mixture is not None and s.wer_clean is not None
    assert s.wer_clean <= 0.3, s
    assert s.wer_mixture >= s.wer_clean, s
    assert s.wer == s.wer_mixture, s
    assert all(0.0 <= v <= 2.0 for v in (s.wer, s.wer_mixture, s.wer_clean)), s
    text = table(scores)
    assert "WER vocals" in text.splitlines()[0] and "WER clean speech" in text.splitlines()[0]
    # LibriSpeech speech has no text: no WER, and the table keeps its old columns
    (libri,) = build_mixtures(shared, tmp_path / "mix", seconds=5, snrs=(0.0,), kinds=("noise",))
    assert libri.text is None
