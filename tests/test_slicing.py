"""Slicing rules on synthetic segment tables and signals (no model needed)."""

import numpy as np

from segment.slicing import Segment, SliceParams, frame_energy, make_slices, speech_regions

SR = 16000


def _energy_with_dips(duration: float, dips: list[float]):
    """A loud signal with short near-silent dips at the given times."""
    t = np.arange(int(duration * SR)) / SR
    x = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    for d in dips:
        x[int((d - 0.05) * SR) : int((d + 0.05) * SR)] *= 0.001
    return frame_energy(x, SR)


def test_same_label_neighbours_merge_across_short_gaps_only() -> None:
    segs = [
        Segment("male", 0, 2),
        Segment("noEnergy", 2, 2.3),
        Segment("male", 2.3, 4),
        Segment("music", 4, 6),
        Segment("male", 7, 8),
        Segment("female", 8.1, 9),
    ]
    regions = speech_regions(segs, ("male", "female"), max_gap=0.5)
    assert regions == [Segment("male", 0, 4), Segment("male", 7, 8), Segment("female", 8.1, 9)]


def test_long_speech_is_split_at_the_quietest_point() -> None:
    energy = _energy_with_dips(40.0, dips=[7.0, 13.0, 26.0])
    segs = [Segment("female", 0.0, 40.0)]
    kept, rejected = make_slices(
        segs, SliceParams(("female",), 1.0, 15.0, padding=0.0), 40.0, energy
    )
    cuts = [s.stop for s in kept[:-1]]
    # at the dips (the latest that fits, so slices are as long as pauses allow), not at 15 s
    assert np.allclose(cuts, [13.0, 26.0], atol=0.02), cuts
    assert not rejected
    assert all(1.0 <= s.duration <= 15.0 for s in kept)


def test_every_slice_respects_min_and_max_and_nothing_is_lost() -> None:
    rng = np.random.default_rng(1)
    segs, t = [], 0.0
    for _ in range(200):
        d = float(rng.uniform(0.1, 40.0))
        segs.append(Segment(str(rng.choice(["male", "female", "noEnergy", "music"])), t, t + d))
        t += d
    energy = frame_energy(rng.standard_normal(int(t * SR)).astype(np.float32), SR)
    params = SliceParams(("male", "female"), min_duration=1.0, max_duration=15.0, padding=0.1)
    kept, rejected = make_slices(segs, params, t, energy)
    assert all(params.min_duration <= s.duration <= params.max_duration + 1e-9 for s in kept)
    assert all(s.duration < params.min_duration for s, _ in rejected)
    regions = speech_regions(segs, params.labels, params.max_gap)
    total_regions = sum(r.duration for r in regions)
    total_slices = sum(s.duration for s in kept) + sum(s.duration for s, _ in rejected)
    padding_added = total_slices - total_regions
    assert 0 <= padding_added <= 2 * params.padding * len(regions) + 1e-6


def test_padding_never_overlaps_a_neighbour() -> None:
    segs = [Segment("male", 1.0, 3.0), Segment("male", 3.05 + 0.6, 6.0)]
    kept, _ = make_slices(
        segs,
        SliceParams(("male",), 0.5, 15.0, max_gap=0.5, padding=0.5),
        7.0,
        _energy_with_dips(7.0, []),
    )
    assert kept[0].stop <= kept[1].start
    assert kept[0].start == 0.5 and kept[1].stop == 6.5
