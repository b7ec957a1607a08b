"""Matplotlib for malmoi's figures: the Agg backend and a font with Hangul.

Matplotlib's default font (DejaVu Sans) has no Hangul: a Korean id or title renders as empty
boxes (``Glyph … missing from font(s) DejaVu Sans``). :func:`pyplot` puts a Korean font first in
``font.family`` and DejaVu Sans after it. ``scripts/bootstrap`` installs one (Debian's
``fonts-nanum``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from malmoi.logs import get_logger

log = get_logger(__name__)

#: Korean fonts, preferred first (Debian's fonts-nanum and fonts-noto-cjk, macOS, Windows).
KOREAN_FONTS = (
    "NanumGothic",
    "NanumBarunGothic",
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "Apple SD Gothic Neo",
    "AppleGothic",
    "Malgun Gothic",
)
#: Where to look for their files when matplotlib's font cache predates their installation.
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
FONT_FILES = ("NanumGothic.ttf", "NanumBarunGothic.ttf", "NotoSansCJK-Regular.ttc")


@functools.cache
def korean_font() -> str | None:
    """The family name of an installed Korean font matplotlib can use, or None."""
    from matplotlib import font_manager

    def known() -> str | None:
        names = {font.name for font in font_manager.fontManager.ttflist}
        return next((name for name in KOREAN_FONTS if name in names), None)

    if found := known():
        return found
    # Installed after matplotlib built its font cache: add the files themselves.
    for folder in FONT_DIRS:
        root = Path(folder).expanduser()
        if not root.is_dir():
            continue
        for name in FONT_FILES:
            for path in sorted(root.rglob(name)):
                try:
                    font_manager.fontManager.addfont(str(path))
                except (OSError, RuntimeError, ValueError):
                    continue
    if found := known():
        return found
    log.warning(
        "no Korean font for plots: Hangul renders as boxes (install fonts-nanum: scripts/bootstrap)"
    )
    return None


def use_korean_font() -> None:
    """Put a Korean font first in matplotlib's ``font.family``, DejaVu Sans after it."""
    import matplotlib

    font = korean_font()
    if font is not None:
        matplotlib.rcParams["font.family"] = [font, "DejaVu Sans"]


def pyplot() -> Any:  # -> matplotlib.pyplot
    """``matplotlib.pyplot`` on the Agg backend, with a font that has Hangul."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_korean_font()
    return plt
