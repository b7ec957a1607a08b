"""malmoi.embedding: the batched embedder gives Resemblyzer's embed_utterance results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from malmoi.embedding import Embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(threads=1)


def _clips(shared: Path) -> list[np.ndarray]:
    import soundfile as sf

    files = sorted((shared / "data" / "librispeech" / "utterances").glob("*/*-0000.flac"))[:3]
    wavs = [sf.read(str(f), dtype="float32")[0] for f in files]
    return wavs + [w[: 2 * 16000] for w in wavs]  # full utterances and 2-s crops


def test_batched_equals_embed_utterance(shared: Path, embedder: Embedder) -> None:
    wavs = _clips(shared)
    got = embedder.embed(wavs, 16000)
    want = np.stack([embedder.encoder.embed_utterance(embedder.preprocess(w, 16000)) for w in wavs])
    assert got.shape == (len(wavs), 256)
    # the README's claim: equal within 2e-7 (measured 1.86e-7 here: float32 rounding of the
    # LSTM's batched matmuls); rtol=0 so the bound is absolute, as stated
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
    # one clip at a time gives the same rows as the whole batch (no cross-talk between clips)
    np.testing.assert_allclose(embedder.embed(wavs[1:2], 16000)[0], got[1], atol=1e-5)


def test_resamples_and_marks_silence(shared: Path, embedder: Embedder) -> None:
    import librosa

    wav = _clips(shared)[0]
    at_8k = librosa.resample(wav, orig_sr=16000, target_sr=8000)
    got = embedder.embed([np.zeros(16000 * 2, dtype=np.float32), at_8k], 8000)
    assert np.isnan(got[0]).all()  # silence: no embedding rather than a meaningless one
    # the clip is resampled to 16 kHz (not read as if it were 16 kHz, twice as fast)
    up = librosa.resample(at_8k, orig_sr=8000, target_sr=16000)
    assert float(got[1] @ embedder.embed([up], 16000)[0]) > 0.999
    assert float(got[1] @ embedder.embed([wav], 16000)[0]) > 0.85
