"""What a dataset was made with: the models of the build (names, files, sha256) and the
committed weights the stages read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from malmoi.config import PipelineConfig
from malmoi.models import sha256_file

REPO = Path(__file__).resolve().parent.parent


def models_used(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """One entry per model file the build's stages use: name, file, sha256 (the pinned hash of
    the model store; for committed weights, the file's own)."""
    from malmoi.models import REGISTRY

    names = []
    if cfg.separate.engine == "spleeter":
        names.append("spleeter:2stems")
    names.append("ina:speech-music-noise")
    if cfg.segment.gender_engine == "ina":
        names.append("ina:gender")
    else:
        names.append("resemblyzer:encoder")
    if cfg.speaker_filter.used and "resemblyzer:encoder" not in names:
        names.append("resemblyzer:encoder")
    if cfg.denoise.scores:
        names.append("dnsmos:p835")
    out = [
        {"name": n, "file": f.name, "sha256": f.sha256, "licence": REGISTRY[n].license}
        for n in names
        if n in REGISTRY
        for f in REGISTRY[n].files
    ]
    if "resemblyzer:encoder" in names:  # its weights ship inside the resemblyzer wheel
        import importlib.util

        found = importlib.util.find_spec("resemblyzer")
        if found is not None and found.submodule_search_locations:
            weights = Path(found.submodule_search_locations[0]) / "pretrained.pt"
            if weights.exists():
                out.append(
                    {
                        "name": "resemblyzer:encoder",
                        "file": weights.name,
                        "sha256": sha256_file(weights),
                        "licence": REGISTRY["resemblyzer:encoder"].license,
                    }
                )
    committed = []
    if cfg.segment.gender_engine != "ina":
        committed.append(("segment gender classifier", REPO / "segment" / "gender_embedding.json"))
    if cfg.speaker_filter.used and cfg.speaker_filter.cohort:
        committed.append(
            ("speaker filter cohort", REPO / "speaker_filter" / "cohort_embeddings.npy")
        )
    for name, path in committed:
        if path.exists():
            out.append(
                {
                    "name": name,
                    "file": path.name,
                    "sha256": sha256_file(path),
                    "licence": "(malmoi)",
                }
            )
    return out
