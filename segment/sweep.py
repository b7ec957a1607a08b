"""Re-slice finished segmentations with other min-duration values, without the model.

The segment stage stores each input's segment table (``segments.csv``) and frame energies
(``energy.npy``); slicing is pure arithmetic on those, so trying thresholds costs seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from malmoi.config import SegmentConfig
from malmoi.manifest import PROGRESS, read_records
from segment.slicing import make_slices
from segment.stage import FRAME, energy_fn, read_segments, slice_params


def sweep_min_duration(folder: Path, values: list[float]) -> list[dict[str, float]]:
    """For each value: kept slice count, their total hours, and how many were too short.

    Uses the parameters the stage ran with (from ``config.yaml``) for everything else; with
    the embedding gender engine the gender filter is not re-applied (it needs the audio).
    """
    import yaml

    cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    params = SegmentConfig.model_validate(cfg.get("segment", cfg))
    inputs = [r["id"] for r in read_records(folder / PROGRESS) if r["status"] == "ok"]
    tables = []
    for input_id in inputs:
        seg_file = folder / input_id / "segments.csv"
        if seg_file.exists():
            track = np.load(folder / input_id / "energy.npy")
            tables.append((read_segments(seg_file), track))
    rows = []
    for value in values:
        count, seconds, short = 0, 0.0, 0
        for segments, track in tables:
            kept, rejected = make_slices(
                segments,
                slice_params(params, min_duration=value),
                len(track) * FRAME,
                energy_fn(track),
                FRAME,
            )
            count += len(kept)
            seconds += sum(s.duration for s in kept)
            short += len(rejected)
        rows.append(
            {"min_duration": value, "slices": count, "hours": seconds / 3600, "too_short": short}
        )
    return rows


__all__ = ["sweep_min_duration"]
