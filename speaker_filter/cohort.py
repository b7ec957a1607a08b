"""The speaker filter's bundled cohort of impostor voices: ``cohort_embeddings.npy`` (float16,
one Resemblyzer d-vector a row) and ``cohort_embeddings.json`` (per row: speaker, kind, source
file; plus how it was made), both beside this module and shipped in the wheel. They are made by
``python -m eval.make_cohort`` from a source checkout."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COHORT_NPY = HERE / "cohort_embeddings.npy"
COHORT_JSON = HERE / "cohort_embeddings.json"


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Cohort:
    """Embeddings of impostor speakers (n, 256) and the speaker of each row."""

    emb: np.ndarray
    speakers: np.ndarray


@functools.cache
def bundled_cohort() -> Cohort:
    """The committed cohort (speaker_filter/cohort_embeddings.npy + .json)."""
    emb = np.load(COHORT_NPY).astype(np.float64)
    rows = json.loads(COHORT_JSON.read_text(encoding="utf-8"))["rows"]
    return Cohort(unit(emb), np.array([r["speaker"] for r in rows]))
