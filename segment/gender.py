"""Gender from Resemblyzer d-vectors (:class:`malmoi.embedding.Embedder`): a logistic regression
whose 256 weights are committed in ``gender_embedding.json`` beside this file, trained by
:mod:`eval.train_gender` on LibriSpeech speakers (see that module for the split and the
measured accuracy)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).with_name("gender_embedding.json")
CLASSES = ("female", "male")
SR = 16000


def load_weights(path: Path = WEIGHTS) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data["_coef"] = np.asarray(data["coef"], dtype=np.float64)
    return data


def predict(embedding: np.ndarray, weights: dict) -> tuple[str, float]:
    """(label, probability of that label) for one 256-d embedding."""
    e = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(e)):
        raise ValueError("embedding contains NaN or inf")
    z = float(e @ weights["_coef"] + float(weights["intercept"]))
    p_male = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    classes = weights.get("classes", CLASSES)
    return (classes[1], p_male) if p_male >= 0.5 else (classes[0], 1.0 - p_male)


def classify(
    embedding: np.ndarray, speech_seconds: float, weights: dict, min_speech_seconds: float = 1.0
) -> tuple[str | None, float | None]:
    """(label, probability) of a slice from its Resemblyzer embedding and how much speech
    Resemblyzer's VAD left in it (seconds); (None, None) below ``min_speech_seconds`` (a silent
    slice would otherwise get a confident, meaningless answer)."""
    if speech_seconds < min_speech_seconds:
        return None, None
    return predict(embedding, weights)
