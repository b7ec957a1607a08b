"""What a dataset was made with: the models of the build's stages (names, files, sha256) and the
committed weights they read, as each stage declares them in :mod:`malmoi.registry`."""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path
from typing import Any

from malmoi.models import sha256_file


def models_used(cfg: Any) -> list[dict[str, Any]]:
    """One entry per model file the build's stages use: name, file, sha256 (the pinned hash of
    the model store; for committed weights, the file's own)."""
    from malmoi.models import catalog
    from malmoi.registry import specs

    known = catalog()
    names: list[str] = []
    committed: list[tuple[str, str, str]] = []
    for spec in specs():
        if not spec.used_by(cfg):
            continue
        names += [n for n in (spec.models(cfg) if spec.models else []) if n not in names]
        committed += spec.weights(cfg) if spec.weights else []
    out = [
        {"name": n, "file": f.name, "sha256": f.sha256, "licence": known[n].license}
        for n in names
        if n in known
        for f in known[n].files
    ]
    if "resemblyzer:encoder" in names:  # its weights ship inside the resemblyzer wheel
        found = importlib.util.find_spec("resemblyzer")
        if found is not None and found.submodule_search_locations:
            weights = Path(found.submodule_search_locations[0]) / "pretrained.pt"
            if weights.exists():
                out.append(
                    {
                        "name": "resemblyzer:encoder",
                        "file": weights.name,
                        "sha256": sha256_file(weights),
                        "licence": known["resemblyzer:encoder"].license,
                    }
                )
    for what, package, file in committed:
        with importlib.resources.as_file(importlib.resources.files(package) / file) as path:
            if path.exists():
                out.append(
                    {
                        "name": what,
                        "file": path.name,
                        "sha256": sha256_file(path),
                        "licence": "(malmoi)",
                    }
                )
    return out
