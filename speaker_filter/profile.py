"""Speaker profiles: the target voice's enrollment, saved under a name and reused across runs.

A profile holds the embeddings of the reference clips (clean, whole), the embeddings of 2-s
crops of them mixed with a synthetic music bed at 10 dB SNR (matched-condition enrollment,
RESEARCH.md), the enrollment vector (normalised mean of all of them), their spread (leave-one-out
similarities) and each clip's sha256. Saved as ``<profiles_dir>/<name>.npz`` (arrays) and
``<name>.json`` (clips, hashes, how it was made)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from malmoi.config import AUDIO_EXTENSIONS
from malmoi.errors import ItemError
from malmoi.logs import get_logger
from speaker_filter import audio
from speaker_filter.cohort import unit

log = get_logger(__name__)

RECIPE = "resemblyzer-matched-v1"  # bump when the enrollment changes
SR = audio.SR
CROP_SECONDS = 2.0
MAX_CROPS = 5
SNR_DB = 10.0


@dataclass
class Profile:
    """One target voice's enrollment."""

    name: str
    refs: np.ndarray  # (n, 256) clean reference clips
    crops: np.ndarray  # (m, 256) music crops of them
    crop_ref: np.ndarray  # (m,) which reference each crop comes from
    clips: list[dict[str, str]] = field(default_factory=list)  # path, sha256
    recipe: str = RECIPE

    @property
    def enroll(self) -> np.ndarray:
        """The enrollment vector: normalised mean of the refs and their crops."""
        return unit(np.concatenate([unit(self.refs), unit(self.crops)]).mean(axis=0))

    @property
    def digest(self) -> str:
        """What the profile's scores depend on: the clips' content and the recipe."""
        return profile_digest([c["sha256"] for c in self.clips], self.recipe)

    def leave_one_out(self) -> np.ndarray:
        """Similarity of each reference and its crops to the enrollment of the other refs."""
        out: list[float] = []
        for j in range(len(self.refs)):
            others = [i for i in range(len(self.refs)) if i != j]
            if not others:
                continue
            rest = np.concatenate(
                [unit(self.refs[others]), unit(self.crops[np.isin(self.crop_ref, others)])]
            )
            e = unit(rest.mean(axis=0))
            own = np.vstack([self.refs[j : j + 1], self.crops[self.crop_ref == j]])
            out += list(unit(own) @ e)
        return np.asarray(out)

    def spread(self) -> dict[str, float]:
        loo = self.leave_one_out()
        sims = unit(np.vstack([self.refs, self.crops])) @ self.enroll
        return {
            "similarity_mean": float(sims.mean()),
            "similarity_min": float(sims.min()),
            "loo_min": float(loo.min()) if loo.size else float("nan"),
        }

    def save(self, folder: Path, quiet: bool = False) -> Path:
        """Write ``<folder>/<name>.npz`` and ``.json``; return the json's path. Logs where
        unless ``quiet`` (the speaker filter's own copy in its stage folder)."""
        from malmoi.files import atomic_path, atomic_write_text

        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{self.name}.npz") as tmp, tmp.open("wb") as fh:
            np.savez(fh, refs=self.refs, crops=self.crops, crop_ref=self.crop_ref, mean=self.enroll)
        info = {
            "name": self.name,
            "recipe": self.recipe,
            "digest": self.digest,
            "clips": self.clips,
            "spread": self.spread(),
            "crops": {
                "seconds": CROP_SECONDS,
                "max_per_clip": MAX_CROPS,
                "snr_db": SNR_DB,
                # the name the recipe was made with; now malmoi.synth.music_bed (the same
                # function, ingest.synthetic imports it too), kept so profiles stay equal
                "music": "crawl.synthetic.music_bed",
            },
        }
        path = folder / f"{self.name}.json"
        atomic_write_text(path, json.dumps(info, indent=1, ensure_ascii=False) + "\n")
        if not quiet:
            n = len(self.refs)
            log.info(
                "speaker profile '%s' saved in %s (%d clip%s)",
                self.name,
                folder,
                n,
                "" if n == 1 else "s",
            )
        return path


def profile_digest(hashes: Iterable[str], recipe: str = RECIPE) -> str:
    return hashlib.sha256(json.dumps([sorted(hashes), recipe]).encode()).hexdigest()[:16]


def reference_files(paths: Iterable[Path]) -> list[Path]:
    """The audio files of ``paths`` (files, or folders searched recursively), sorted."""
    out: list[Path] = []
    exts = {f".{e}" for e in AUDIO_EXTENSIONS}
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        elif p.is_file():
            out.append(p)
        else:
            raise ItemError(f"reference {p}: no such file or folder")
    if not out:
        raise ItemError(f"no reference audio in {', '.join(map(str, paths))}")
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def references_digest(paths: Iterable[Path]) -> str:
    """The digest a profile built from ``paths`` will have (cheap: hashes only)."""
    return profile_digest(sha256_file(f) for f in reference_files(paths))


def build_profile(name: str, paths: Iterable[Path], embedder) -> Profile:  # embedder: Embedder
    """Embed the reference clips of ``paths`` and their music crops into a :class:`Profile`."""
    files = reference_files(paths)
    wavs = [audio.load(f) for f in files]
    hashes = [sha256_file(f) for f in files]
    music = audio.music(60 * SR)
    n = round(CROP_SECONDS * SR)
    crops, crop_ref = [], []
    for i, (w, h) in enumerate(zip(wavs, hashes, strict=True)):
        rng = np.random.default_rng(int(h[:8], 16))
        for k in range(min(MAX_CROPS, len(w) // n)):
            crops.append(audio.mix(w[k * n : (k + 1) * n], music, SNR_DB, rng))
            crop_ref.append(i)
    emb = embedder.embed(wavs + crops, SR)
    refs, cemb = emb[: len(wavs)], emb[len(wavs) :]
    ok = ~np.isnan(refs).any(axis=1)
    if not ok.any():
        raise ItemError(f"no speech found in the reference clips {', '.join(map(str, files))}")
    for f in np.asarray(files)[~ok]:
        log.warning("reference %s: too little speech, left out", f)
    cref = np.asarray(crop_ref, dtype=np.int64)
    cok = ~np.isnan(cemb).any(axis=1) & np.isin(cref, np.flatnonzero(ok))
    remap = np.cumsum(ok) - 1  # old ref index -> new
    clips = [
        {"path": str(f), "sha256": h} for f, h, good in zip(files, hashes, ok, strict=True) if good
    ]
    return Profile(name, refs[ok], cemb[cok], remap[cref[cok]], clips)


def load_profile(name: str, folder: Path) -> Profile:
    """The profile saved as ``name`` in ``folder``; ItemError naming the file when absent."""
    meta_path, arr_path = folder / f"{name}.json", folder / f"{name}.npz"
    if not meta_path.exists() or not arr_path.exists():
        raise ItemError(
            f"speaker profile '{name}' not found in {folder} "
            f"(make it with --reference ... --save-profile {name})"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    z = np.load(arr_path, allow_pickle=False)
    return Profile(
        name, z["refs"], z["crops"], z["crop_ref"], meta["clips"], meta.get("recipe", RECIPE)
    )


def profile_meta_digest(name: str, folder: Path) -> str:
    """A saved profile's digest from its json alone (no arrays read)."""
    path = folder / f"{name}.json"
    if not path.exists():
        raise ItemError(
            f"speaker profile '{name}' not found in {folder} "
            f"(make it with --reference ... --save-profile {name})"
        )
    return str(json.loads(path.read_text(encoding="utf-8"))["digest"])
