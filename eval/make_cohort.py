"""Make the committed cohort of the speaker filter: ``speaker_filter/cohort_embeddings.npy``
(float16, one Resemblyzer d-vector a row) and ``cohort_embeddings.json`` (per row: speaker, kind,
source file; plus how it was made).

Reads the 120 LibriSpeech speakers of ``<shared>/librispeech/speakers`` (one utterance each,
disjoint from the test speakers of ``eval/speaker.py``): per speaker the full
utterance, 3 clean 2-s crops spread over it, and the same crops with music at 10 dB SNR from
``<shared>/music/audio_example.mp3`` — a different piece from the synthetic music bed the stage
mixes into the references' enrollment crops (one piece in both is a bias measured in RESEARCH.md).
Rows Resemblyzer's VAD finds silent are left out. This is the ``build()`` code of eval/speaker.py.

Run from the repository root: ``python -m eval.make_cohort [--shared ../shared/data]``."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from eval.common import SR, load, mix
from eval.speaker import COHORT_CROPS, DEFAULT_SHARED, OTHER_MUSIC, SNR_DB, spread_crops
from malmoi.logs import get_logger
from speaker_filter.cohort import COHORT_JSON, COHORT_NPY

log = get_logger(__name__)


def make(shared: Path, out_npy: Path = COHORT_NPY, out_json: Path = COHORT_JSON) -> int:
    """Embed the cohort of ``shared`` and write ``out_npy`` + ``out_json``; return the rows."""
    from importlib.metadata import version

    from malmoi.embedding import Embedder
    from malmoi.files import atomic_path, atomic_write_text

    files = sorted((shared / "librispeech" / "speakers").glob("*.flac"))
    if not files:
        raise SystemExit(f"no cohort utterances in {shared / 'librispeech' / 'speakers'}")
    rng = np.random.default_rng(11)
    music = load(shared / OTHER_MUSIC)
    wavs: list[np.ndarray] = []
    meta: list[tuple[str, str, str]] = []
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
        w = load(f)
        spk = f.name.split("-")[0]
        wavs.append(w)
        meta.append((spk, "full", f.name))
        for c in spread_crops(w, COHORT_CROPS):
            wavs += [c, mix(c, music, SNR_DB, rng)]
            meta += [(spk, "crop", f.name), (spk, "crop+music", f.name)]
    emb = Embedder().embed(wavs, SR)
    ok = ~np.isnan(emb).any(axis=1)
    log.info("cohort: %d items, %d silent after VAD left out", len(wavs), int((~ok).sum()))
    with atomic_path(out_npy) as tmp, tmp.open("wb") as fh:
        np.save(fh, emb[ok].astype(np.float16))
    kept = [m for m, good in zip(meta, ok.tolist(), strict=True) if good]
    info = {
        "made_by": "python -m eval.make_cohort",
        "resemblyzer": version("resemblyzer"),
        "sample_rate": SR,
        "crops": {
            "seconds": 2.0,
            "per_speaker": COHORT_CROPS,
            "music": OTHER_MUSIC,
            "snr_db": SNR_DB,
        },
        "inputs_sha256": digest.hexdigest(),
        "speakers": len({m[0] for m in kept}),
        "rows": [{"speaker": s, "kind": k, "file": n} for s, k, n in kept],
    }
    atomic_write_text(out_json, json.dumps(info, indent=1) + "\n")
    return int(ok.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    args = parser.parse_args()
    rows = make(args.shared)
    log.info("wrote %s (%d rows) and %s", COHORT_NPY, rows, COHORT_JSON)


if __name__ == "__main__":
    main()
