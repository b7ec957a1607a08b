"""Hangul in malmoi's figures (malmoi/plots.py): a Korean font first, no missing glyphs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

HANGUL = "뉴스_클립 말모이"


@pytest.fixture(autouse=True)
def default_rc():
    """Each test starts from matplotlib's default style (DejaVu Sans) and leaves it so."""
    import matplotlib

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        yield


def _missing_glyphs(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_hangul_title_renders_with_a_korean_font(tmp_path: Path) -> None:
    from malmoi.plots import korean_font, pyplot

    assert korean_font(), "no Korean font for matplotlib: run scripts/bootstrap (fonts-nanum)"
    plt = pyplot()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots()
        ax.set_title(f"{HANGUL} (train, 1.50 s)")
        ax.set_xlabel("time (s)")
        fig.savefig(tmp_path / "hangul.png")
        plt.close(fig)
    assert _missing_glyphs(caught) == []
    assert (tmp_path / "hangul.png").stat().st_size > 0


def test_card_spectrogram_of_a_korean_id_has_no_missing_glyphs(tmp_path: Path) -> None:
    from export.card import plot_spectrogram

    wav = tmp_path / "slice.wav"
    t = np.arange(16000) / 16000
    sf.write(wav, (0.1 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16000)
    row = {"id": f"{HANGUL}-3fa2b1c0d4e5f607.s0001", "split": "train", "duration": 1.0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plot_spectrogram(wav, row, tmp_path / "spec.png")
    assert _missing_glyphs(caught) == []
