"""Stream a WAV through a block function in overlapping chunks, cross-fading the seams.

Memory is bounded by one chunk whatever the file length: the input is read block by block and
every output is written as soon as it is final. Engines whose model has no exact chunking of its
own (REPET) use this; Spleeter's engine chunks on its model's own segment grid instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from malmoi.audio import sound_file

BlockFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def open_outputs(
    paths: dict[str, Path], sample_rate: int, channels: int, frames: int
) -> dict[str, sf.SoundFile]:
    """32-bit float WAVs (RF64 past 4 GB): separated stems can exceed full scale."""
    fmt = "WAV" if frames * channels * 4 < 2**31 else "RF64"
    return {
        name: sound_file(
            path, "w", samplerate=sample_rate, channels=channels, subtype="FLOAT", format=fmt
        )
        for name, path in paths.items()
    }


def fade_in(n: int) -> np.ndarray:
    """Raised-cosine ramp 0→1 of ``n`` samples; ``1 - fade_in`` fades out (they sum to 1)."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)[:, None]


def process_in_chunks(
    in_wav: Path,
    out: dict[str, Path],
    fn: BlockFn,
    chunk_seconds: float,
    overlap_seconds: float,
) -> None:
    """Run ``fn`` on chunks of ``in_wav`` and write each named output of the same length.

    Chunk k covers ``[k*hop, k*hop + chunk)`` with ``hop = chunk - overlap``; in each overlap
    the earlier chunk fades out while the later fades in. ``chunk_seconds <= 0`` runs the whole
    file as one block.
    """
    with sf.SoundFile(str(in_wav)) as fin:
        sr, n_total, ch = fin.samplerate, fin.frames, fin.channels
        if chunk_seconds <= 0:
            chunk, overlap = max(n_total, 1), 0
        else:
            chunk = int(chunk_seconds * sr)
            overlap = min(int(overlap_seconds * sr), chunk // 2)
        hop = chunk - overlap
        writers = open_outputs(out, sr, ch, n_total)
        try:
            pending: dict[str, np.ndarray] = {}
            carry = np.zeros((0, ch), np.float32)  # input samples shared with the next chunk
            pos = 0  # input index of the first sample of the current chunk
            while pos < n_total or pos == 0:
                fresh = fin.read(chunk - len(carry), dtype="float32", always_2d=True)
                block = np.concatenate([carry, fresh])
                last = pos + len(block) >= n_total
                result = fn(block)
                head = min(len(pending.get(next(iter(out)), ())), len(block))
                for name, y in result.items():
                    y = y[: len(block)].astype(np.float32, copy=False)
                    if head:
                        ramp = fade_in(head)
                        y = y.copy()
                        y[:head] = pending[name][:head] * (1 - ramp) + y[:head] * ramp
                    keep = len(y) if last else len(y) - overlap
                    writers[name].write(y[:keep])
                    pending[name] = y[keep:]
                if last:
                    break
                carry = block[hop:]
                pos += hop
        finally:
            for w in writers.values():
                w.close()
