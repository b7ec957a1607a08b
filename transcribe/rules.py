"""The transcribe stage's rules: which slices ASR shows unfit, and which text a slice gets.

Every rule reads the measurements stored in a row (:class:`transcribe.stage.TranscribeRow`), so a
changed setting re-partitions the stored rows without running the model again. In order, a slice
is rejected as:

1. **no speech** — Silero VAD finds speech in less than ``min_speech_share`` of the slice (music,
   noise, silence: Whisper base still "hears" ``you`` in 4 s of digital silence), or Whisper's
   own rule: its no-speech probability above ``max_no_speech_prob`` and its average
   log-probability below ``no_speech_logprob``;
2. **another language** — detected outside ``languages`` with probability ≥ ``min_language_prob``;
3. **a repetition loop** — the text's gzip compression ratio above ``max_compression_ratio``
   (``1,500,000,000,…`` from base on a robotic voice), or **runaway output** — more characters
   per second than anyone speaks (``max_chars_per_second``);
4. **empty text on speech** — nothing recognised where no rule above saw silence;
5. **a speaking-rate outlier** — characters per second outside the run's interquartile fences
   (Q1 − k·IQR, Q3 + k·IQR, k = ``rate_fence``, as Emilia-Pipe filters), once at least
   ``rate_min_slices`` slices have text;
6. **a subtitle that disagrees with the audio** — with ``subtitle_mismatch: reject`` (with
   ``asr``, the slice keeps the ASR text instead).

The text (:func:`choose_text`): the subtitle where one covers the slice and its CER against the
ASR text is at most ``max_cer``, else the ASR text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

NO_SPEECH = "no speech"
EMPTY = "empty text on speech"


def _f(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(out) else out


def rate_fences(rates: Sequence[float], k: float | None, min_slices: int) -> tuple[float, float]:
    """The speaking-rate fences (characters per second) of a run: quartiles ∓ ``k`` IQR;
    (-inf, inf) when off or with fewer than ``min_slices`` rates."""
    if k is None or len(rates) < min_slices:
        return (-np.inf, np.inf)
    q1, q3 = np.percentile(np.asarray(rates, dtype=float), [25, 75])
    return (float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1)))


def slice_reason(row: dict[str, Any], p: Any) -> str | None:
    """Why a slice is rejected by the rules that read only its own row (1–4), None: it passes.
    ``p``: a :class:`malmoi.config.TranscribeConfig`."""
    text = str(row.get("asr_text") or "")
    speech, duration = _f(row.get("speech_seconds")), _f(row.get("duration"))
    if speech is not None and duration and speech < p.min_speech_share * duration:
        return (
            f"{NO_SPEECH} (VAD: {speech:.2f} s of {duration:.2f} s is speech, under "
            f"{p.min_speech_share:.0%})"
        )
    no_speech, logprob = _f(row.get("no_speech_prob")), _f(row.get("avg_logprob"))
    if (
        no_speech is not None
        and no_speech > p.max_no_speech_prob
        and (logprob is None or logprob < p.no_speech_logprob)
    ):
        return (
            f"{NO_SPEECH} (no-speech probability {no_speech:.2f} > {p.max_no_speech_prob:g}, "
            f"average log-probability {_show(logprob)} < {p.no_speech_logprob:g})"
        )
    language, prob = str(row.get("language") or ""), _f(row.get("language_prob")) or 0.0
    if language and language not in p.languages and prob >= p.min_language_prob:
        return (
            f"language {language} (p {prob:.2f} ≥ {p.min_language_prob:g}), not in "
            f"{','.join(p.languages)}"
        )
    ratio = _f(row.get("compression_ratio")) or 0.0
    if ratio > p.max_compression_ratio:
        return f"repetition loop (compression ratio {ratio:.2f} > {p.max_compression_ratio:g})"
    cps = _f(row.get("chars_per_second")) or 0.0
    if cps > p.max_chars_per_second:
        return f"runaway output ({cps:.1f} characters/s > {p.max_chars_per_second:g})"
    if not text.strip():
        return EMPTY
    return None


def rate_reason(row: dict[str, Any], fences: tuple[float, float]) -> str | None:
    """Why a slice is a speaking-rate outlier of its run (None: inside the fences)."""
    cps = _f(row.get("chars_per_second"))
    lo, hi = fences
    if cps is None or lo <= cps <= hi:
        return None
    side = "below" if cps < lo else "above"
    edge = lo if cps < lo else hi
    return f"speaking rate {cps:.1f} characters/s {side} the run's fence {edge:.1f}"


def choose_text(row: dict[str, Any], p: Any) -> tuple[str, str, str | None]:
    """(text, text_source, reason): the subtitle when it agrees with the audio (CER at most
    ``max_cer``), else the ASR text — or, with ``subtitle_mismatch: reject``, the reason."""
    subtitle = str(row.get("subtitle_text") or "")
    asr = str(row.get("asr_text") or "")
    cer = _f(row.get("cer"))
    if subtitle and cer is not None and cer <= p.max_cer:
        return subtitle, "subtitles", None
    if subtitle and cer is not None:
        if p.subtitle_mismatch == "reject":
            return asr, "asr", f"subtitle disagrees with the audio (CER {cer:.2f} > {p.max_cer:g})"
        return asr, "asr", None
    if subtitle and not asr:
        return subtitle, "subtitles", None
    return asr, "asr" if asr else "", None


def partition(
    rows: list[dict[str, Any]], p: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], tuple[float, float]]:
    """The rows split into kept and rejected (with ``reason``) by every rule, each kept row's
    ``text`` and ``text_source`` set; and the run's speaking-rate fences."""
    first: list[tuple[dict[str, Any], str | None]] = [(r, slice_reason(r, p)) for r in rows]
    rates = [
        c for r, why in first if why is None and (c := _f(r.get("chars_per_second"))) is not None
    ]
    fences = rate_fences(rates, p.rate_fence, p.rate_min_slices)
    kept, rejected = [], []
    for row, why in first:
        row = {k: v for k, v in row.items() if k != "reason"}
        text, source, mismatch = choose_text(row, p)
        why = why or rate_reason(row, fences) or mismatch
        if why and why.startswith(NO_SPEECH):  # no text is invented for it
            text, source = "", ""
        row.update(text=text, text_source=source)
        if why:
            rejected.append({**row, "reason": why})
        else:
            kept.append(row)
    return kept, rejected, fences


def _show(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"
