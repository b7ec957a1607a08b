"""What a separation engine provides: one input WAV in, a vocals WAV and a background WAV out,
of the input's length and channels, with bounded memory whatever the length."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar


class Engine(ABC):
    """A separation engine; model loading happens in ``__init__`` (called from the stage's
    ``setup``), once per process."""

    name: ClassVar[str]
    stems: ClassVar[tuple[str, str]] = ("vocals", "accompaniment")
    #: the sample rate the model works at (None: any); the stage resamples to it and back
    model_rate: int | None = None

    @abstractmethod
    def separate_file(self, in_wav: Path, vocals: Path, accompaniment: Path) -> None:
        """Write both stems (32-bit float WAV) of ``in_wav``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""
