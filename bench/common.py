"""Helpers shared by the bench scripts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_looped(path: Path, loop: np.ndarray, minutes: int, sample_rate: int) -> Path:
    """Write ``loop`` repeated to ``minutes`` as 16-bit WAV, block by block, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 1 if loop.ndim == 1 else loop.shape[1]
    tmp = path.with_suffix(".tmp.wav")
    with sf.SoundFile(str(tmp), "w", sample_rate, channels, subtype="PCM_16", format="WAV") as fh:
        left = minutes * 60 * sample_rate
        while left > 0:
            fh.write(loop[: min(left, len(loop))])
            left -= min(left, len(loop))
    tmp.rename(path)
    return path
