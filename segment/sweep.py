"""Re-slice finished segmentations with other min-duration values, without the model.

The segment stage stores each input's segment table (``segments.csv``) and frame energies
(``energy.npy``); slicing is pure arithmetic on those, so trying thresholds costs seconds. The
gender filter is applied as the stage applies it when the gender comes from the segment labels
(``gender_engine: ina``); with the ``ina-slice`` and ``embedding`` engines it needs the audio
and a model, so the counts are then before the gender filter (``other_gender`` is None).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from malmoi.config import SegmentConfig
from malmoi.manifest import PROGRESS, read_records
from segment.slicing import make_slices
from segment.stage import (
    FRAME,
    energy_fn,
    gender_rejection,
    label_gender,
    read_segments,
    slice_params,
)


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a segment stage's output folder the sweep can read, or None."""
    if not folder.is_dir():
        return f"{folder}: no such folder; give a segment stage's output folder (runs/x/segment)"
    if not (folder / "config.yaml").is_file() or not (folder / PROGRESS).is_file():
        return (
            f"{folder}: not a stage's output folder (no config.yaml and {PROGRESS}); give a "
            "segment stage's output folder (runs/x/segment)"
        )
    if next(folder.glob("*/segments.csv"), None) is None:
        return (
            f"{folder}: no segment tables (<input>/segments.csv): not a segment stage's output "
            "folder, or its run kept nothing"
        )
    return None


def stage_params(folder: Path) -> SegmentConfig:
    """The parameters the segment stage in ``folder`` ran with (its ``config.yaml``)."""
    import yaml

    cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    return SegmentConfig.model_validate(cfg.get("segment", cfg))


def gender_filtered(params: SegmentConfig) -> bool:
    """Whether the sweep can apply the stage's gender filter (it can from ina's labels)."""
    return params.gender == "any" or params.gender_engine == "ina"


def sweep_min_duration(folder: Path, values: list[float]) -> list[dict[str, float | int | None]]:
    """For each value: kept slice count, their total hours, how many were too short, and how
    many the gender filter dropped (None when it cannot be applied without the audio).

    Uses the parameters the stage ran with (from ``config.yaml``) for everything else.
    """
    params = stage_params(folder)
    by_label = params.gender_engine == "ina"
    inputs = [r["id"] for r in read_records(folder / PROGRESS) if r["status"] == "ok"]
    tables = []
    for input_id in inputs:
        seg_file = folder / input_id / "segments.csv"
        if seg_file.exists():
            track = np.load(folder / input_id / "energy.npy")
            tables.append((read_segments(seg_file), track))
    rows: list[dict[str, float | int | None]] = []
    for value in values:
        count, seconds, short, other = 0, 0.0, 0, 0
        for segments, track in tables:
            kept, rejected = make_slices(
                segments,
                slice_params(params, min_duration=value),
                len(track) * FRAME,
                energy_fn(track),
                FRAME,
            )
            short += len(rejected)
            for piece in kept:
                if by_label and gender_rejection(label_gender(piece.label), params.gender):
                    other += 1
                    continue
                count += 1
                seconds += piece.duration
        rows.append(
            {
                "min_duration": value,
                "slices": count,
                "hours": seconds / 3600,
                "too_short": short,
                "other_gender": other if gender_filtered(params) else None,
            }
        )
    return rows


__all__ = ["gender_filtered", "stage_params", "sweep_min_duration"]
