"""What every bench needs, written once: audio loaded as 16-kHz mono, mixing at an SNR, the
scores (SI-SDR, SNR) and Markdown tables. The loading and the random-stretch mix are the speaker
filter's own (:mod:`speaker_filter.audio`), so the benches build crops exactly as the stage."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from speaker_filter.audio import SR, load, mix, snr_gain

__all__ = [
    "SR",
    "load",
    "markdown_table",
    "mix",
    "mix_at_snr",
    "si_sdr",
    "snr",
    "snr_gain",
    "to_mono",
]


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (mono signals of equal length)."""
    est = estimate.astype(np.float64) - np.mean(estimate)
    ref = reference.astype(np.float64) - np.mean(reference)
    alpha = np.dot(est, ref) / max(np.dot(ref, ref), 1e-12)
    target = alpha * ref
    return float(10 * np.log10(np.sum(target**2) / max(np.sum((est - target) ** 2), 1e-12)))


def snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Plain SNR of ``estimate`` against ``reference`` in dB."""
    ref = reference.astype(np.float64)
    err = estimate.astype(np.float64) - ref
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-12)))


def to_mono(x: np.ndarray) -> np.ndarray:
    """The mean of the channels of (n, channels) audio; (n,) audio as it is."""
    return x.mean(axis=1) if x.ndim == 2 else x


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled so that 10·log10(P_clean / P_noise) is ``snr_db``.

    ``clean``: (n,) or (n, channels); ``noise``: (n,) (the same noise in every channel) or the
    shape of ``clean``. Returns float32 shaped like ``clean``."""
    clean64 = np.asarray(clean, dtype=np.float64)
    noise64 = np.asarray(noise, dtype=np.float64)
    if noise64.ndim == 1 and clean64.ndim == 2:
        noise64 = noise64[:, None]
    noise64 = np.broadcast_to(noise64, clean64.shape)
    if np.mean(noise64**2) == 0 or np.mean(clean64**2) == 0:
        raise ValueError("mix_at_snr needs clean speech and noise that are not silent")
    return (clean64 + snr_gain(clean64, noise64, snr_db) * noise64).astype(np.float32)


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()
) -> str:
    """A Markdown table: ``header``, then one line per row (cells as ``str``); the columns
    whose index is in ``right`` are right-aligned."""
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def write_scores(out: Path, name: str, text: str, scores: Sequence[Any]) -> None:
    """An evaluation's Markdown table (``<name>.md``) and every score (``<name>.csv``): the
    scores are dataclasses with an ``improvement`` property."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
        rows = [asdict(s) | {"improvement": s.improvement} for s in scores]
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
