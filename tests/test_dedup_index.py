"""export.dedup.Index (issue 24): the inverted index as sorted arrays proposes the same
candidate alignments as the dictionary filled unit after unit (:func:`export.dedup.candidates`,
the rule as written), on fingerprints with copies, noise and values repeated past
MAX_POSTINGS."""

from collections import defaultdict

import numpy as np
import pytest

from export.dedup import MAX_POSTINGS, Index, Unit, candidates


def _units(rng: np.random.Generator) -> list[Unit]:
    units: list[Unit] = []
    for k in range(40):
        fp = rng.integers(0, 2**32, int(rng.integers(5, 400)), dtype=np.uint64).astype(np.uint32)
        if k and k % 3 == 0:  # a stretch of an earlier unit, at an offset, a few bits flipped
            src = units[int(rng.integers(0, k))].fingerprint
            a = int(rng.integers(0, max(1, len(src) - 5)))
            piece = src[a : a + int(rng.integers(5, 120))].copy()
            flip = rng.random(len(piece)) < 0.2
            piece[flip] ^= np.uint32(1) << rng.integers(0, 32, int(flip.sum())).astype(np.uint32)
            at = int(rng.integers(0, len(fp)))
            fp = np.concatenate([fp[:at], piece, fp[at:]])
        if k % 5 == 1:  # silence: one value over and over (past MAX_POSTINGS in the end)
            fp[: min(len(fp), 60)] = 7
        if k % 7 == 2:  # a unit of the same source as the one before (slice units)
            units.append(Unit(f"slice\0{k}", units[-1].rank, fp))
            continue
        units.append(Unit(f"source\0{k}", k, fp))
    return units


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_the_array_index_proposes_what_the_dictionary_does(seed: int) -> None:
    units = _units(np.random.default_rng(seed))
    assert sum(int(np.sum(u.fingerprint == 7)) for u in units) > MAX_POSTINGS
    index = Index(units)
    slow: dict[int, list[tuple[str, int]]] = defaultdict(list)
    proposed = 0
    for k, unit in enumerate(units):
        expected = candidates(slow, unit.fingerprint)
        assert index.candidates(k) == expected
        proposed += len(expected)
        for pos, value in enumerate(unit.fingerprint.tolist()):
            slow[value].append((unit.name, pos))
    assert proposed >= 5  # the copies were found, so the comparison compared something


def test_an_empty_index_proposes_nothing() -> None:
    assert Index([]).candidates(0) == []
    lone = Unit("source\0a", 0, np.array([1, 2, 3], dtype=np.uint32))
    assert Index([lone]).candidates(0) == []
