"""Denoise stage: filter each slice, normalise its level, and score its quality before and after.

Reads: the previous stage's WAVs (the segment stage's slices in the pipeline; any audio files
from the CLI). Writes ``<out>/<parent id>/<id>.wav`` (32-bit float WAV, same rate and channels)
and one :class:`DenoiseRow` per slice in ``manifest.csv``: the notches applied (explicit ones and
those found in the slice's whole source track, once per source), the gain of the normalisation,
and the quality scores before and after (WADA-SNR, DNSMOS P.835 SIG/BAK/OVRL). Slices under the
configured ``min_dnsmos_ovrl`` / ``min_snr_db`` go to ``rejected.csv`` with the reason.

Engines: ``scipy`` (the configured chain: zero-phase SOS filters, RNNoise, spectral gating,
BS.1770 loudness with a true-peak ceiling) and ``pydub`` (the seed's recipe: pydub's
``low_pass_filter`` applied ``lowpass.passes`` times, then pydub's ``normalize``).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf
from pydantic import Field

from malmoi.audio import decode_to_float_wav, sndfile_pcm, sound_file
from malmoi.config import DenoiseConfig, ModelsConfig
from malmoi.errors import ItemError
from malmoi.files import atomic_path, temp_dir
from malmoi.ids import child_id
from malmoi.logs import get_logger
from malmoi.manifest import AudioRow
from malmoi.stage import Item, Result, Stage

log = get_logger(__name__)

SEED_CUTOFF_HZ = 5000.0  # the seed's low-pass: the pydub recipe's cutoff unless one is set
SCORE_NAMES = ("snr_db", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
LONG_BLOCKS = 2  # inputs longer than this many blocks are streamed (bounded memory)
EXCERPTS = 5  # 10-s excerpts scored on a long input


class DenoiseRow(AudioRow):
    """A filtered, level-normalised slice with its quality before and after."""

    start: float | None = Field(None, description="seconds into the source track (slices)")
    stop: float | None = None
    gender: str = Field("", description="as the segment stage told it")
    engine: str
    chain: str = Field(description="the steps applied, in order")
    notches_hz: str = Field("[]", description="JSON list of the notch frequencies applied")
    auto_notches_hz: str = Field("[]", description="JSON list of those found automatically")
    lowpass_hz: str = Field(
        "",
        description="the low-pass cutoff applied (Hz); 'none': auto found no noise above the "
        "speech to cut; empty: no low-pass in the chain",
    )
    gain_db: float = Field(0.0, description="gain of the normalisation")
    snr_db_before: float | None = Field(None, description="WADA-SNR estimate of the input")
    snr_db_after: float | None = None
    dnsmos_sig_before: float | None = None
    dnsmos_sig_after: float | None = None
    dnsmos_bak_before: float | None = None
    dnsmos_bak_after: float | None = None
    dnsmos_ovrl_before: float | None = None
    dnsmos_ovrl_after: float | None = None


TrackOf = Callable[[Item], tuple[str, Path] | None]


class DenoiseStage(Stage[DenoiseConfig, DenoiseRow]):
    """Filter, normalise and score each input slice."""

    name: ClassVar[str] = "denoise"
    version: ClassVar[str] = "1"
    row_type: ClassVar[type[DenoiseRow]] = DenoiseRow
    unkeyed_params: ClassVar[frozenset[str]] = frozenset({"block_seconds", "workers"})

    def __init__(
        self,
        params: DenoiseConfig,
        out_dir: Path,
        models: ModelsConfig | None = None,
        track_of: TrackOf | None = None,
    ):
        super().__init__(params, out_dir)
        self.models = models
        self.track_of = track_of  # the source track a slice was cut from, for auto-notch
        self._found: dict[str, list[float]] = {}  # auto notches per source track
        self._cutoffs: dict[str, float | None] = {}  # auto low-pass cutoffs per source track
        self._finding = threading.Lock()  # one search per track, whichever thread asks first
        # RNNoise keeps state per stream: one slice at a time through it
        self.workers = 1 if "rnnoise" in params.chain else params.workers
        self.dnsmos: Any = None

    @classmethod
    def from_config(cls, cfg: Any) -> DenoiseStage:
        """With the model store, and the separate stage's tracks (for auto-notch)."""
        return cls(
            cfg.denoise,
            cfg.stage_dir(cls.name),
            models=cfg.models,
            track_of=tracks_from(cfg.stage_dir("separate")),
        )

    def setup(self) -> None:
        if self.params.scores:
            from denoise.quality import Dnsmos

            self.dnsmos = Dnsmos.from_store(self.models)
        if self.params.engine == "scipy" and "rnnoise" in self.params.chain:
            from denoise.learned import RNNoise

            self.rnnoise = RNNoise()

    # --- per item ---------------------------------------------------------------------------

    def process(self, item: Item) -> Result[DenoiseRow]:
        new_id = child_id(item.id, "denoised")
        folder = str(item.row.get("parent_id") or item.id)
        rel = f"{Path(folder).name}/{new_id}.wav"
        dest = self.out_dir / rel
        with contextlib.ExitStack() as stack:
            src = self._readable(item.path, stack)
            info = sf.info(str(src))
            sr, channels = int(info.samplerate), int(info.channels)
            if info.frames == 0:
                raise ItemError("empty audio (0 samples)")
            if info.frames > LONG_BLOCKS * self.params.block_seconds * sr:
                frames, applied, auto, cutoff, gain, before, after = self._long(
                    item, src, dest, stack
                )
            else:
                audio, _ = sf.read(str(src), dtype="float32", always_2d=True)
                before = self._scores(audio, sr)
                auto = self._auto_notches(item, audio, sr)
                cutoff = self.cutoff(self._auto_lowpass(item, audio, sr))
                out, applied, gain = self.chain(audio, sr, auto, cutoff)
                after = self._scores(out, sr)
                frames = len(out)
                with (
                    atomic_path(dest) as tmp,
                    sound_file(
                        tmp, "w", samplerate=sr, channels=channels, subtype="FLOAT", format="WAV"
                    ) as fh,
                ):
                    fh.write(out)
        row = self.make_row(
            item,
            id=new_id,
            path=rel,
            frames=frames,
            sample_rate=sr,
            channels=channels,
            engine=self.params.engine,
            chain=" → ".join(self.steps()),
            notches_hz=json.dumps([round(f, 2) for f in applied]),
            auto_notches_hz=json.dumps([round(f, 2) for f in auto]),
            lowpass_hz=self._lowpass_text(cutoff),
            gain_db=round(gain, 3),
            **{f"{k}_before": v for k, v in before.items()},
            **{f"{k}_after": v for k, v in after.items()},
        )
        reason = self.judge(after)
        if reason:
            dest.unlink(missing_ok=True)
            return Result(rejected=[(row, reason)])
        return Result(kept=[row])

    def _long(
        self, item: Item, src: Path, dest: Path, stack: contextlib.ExitStack
    ) -> tuple[int, list[float], list[float], float | None, float, dict, dict]:
        """The chain on a long input, streamed with memory bounded by one block: the filters
        in the chain's order, then the normalisation; scores on excerpts."""
        from denoise.filters import filter_file
        from denoise.longfile import normalize_file

        p = self.params
        if p.engine != "scipy" or {"rnnoise", "gate"} & set(p.chain):
            raise ItemError(
                f"longer than {LONG_BLOCKS * p.block_seconds:g} s: only the scipy engine's "
                "filters and normalisation stream long inputs (no pydub, rnnoise or gate)"
            )
        info = sf.info(str(src))
        sr = int(info.samplerate)
        before = self._scores_file(src)
        auto = self._auto_notches(item, src, sr)
        cutoff = self.cutoff(self._auto_lowpass(item, src, sr))
        filters = [
            f
            for step in p.chain
            if step != "normalize"
            for f in self.filters(step, sr, auto, cutoff)
        ]
        applied = [f for f, _ in self.notches(sr, auto)] if "notch" in p.chain else []
        work = Path(stack.enter_context(temp_dir(self.out_dir)))
        filtered = work / "filtered.wav"
        filter_file(src, filtered, filters, p.block_seconds)
        gain = 0.0
        if "normalize" in p.chain:
            gain = normalize_file(filtered, dest, p.normalize, p.block_seconds)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            filtered.replace(dest)
        after = self._scores_file(dest)
        return int(sf.info(str(dest)).frames), applied, auto, cutoff, gain, before, after

    def _scores_file(self, path: Path) -> dict[str, float | None]:
        """Scores of a long file: the mean over up to ``EXCERPTS`` evenly spaced 10-s
        excerpts (DNSMOS on a whole episode would take longer than the filtering)."""
        if not self.params.scores:
            return dict.fromkeys(SCORE_NAMES)
        info = sf.info(str(path))
        length = min(info.frames, int(10 * info.samplerate))
        starts = np.linspace(0, info.frames - length, EXCERPTS).astype(int)
        values: dict[str, list[float]] = {k: [] for k in SCORE_NAMES}
        with sf.SoundFile(str(path)) as fh:
            for start in starts:
                fh.seek(int(start))
                excerpt = fh.read(length, dtype="float32", always_2d=True)
                for k, v in self._scores(excerpt, int(info.samplerate)).items():
                    if v is not None:
                        values[k].append(v)
        return {k: (round(float(np.mean(v)), 4) if v else None) for k, v in values.items()}

    def steps(self) -> list[str]:
        """The steps this configuration applies, in order."""
        if self.params.engine == "pydub":
            return [f"pydub low_pass_filter ×{self.params.lowpass.passes}", "pydub normalize"]
        return list(self.params.chain)

    def cutoff(self, found: float | None) -> float | None:
        """The low-pass cutoff (Hz) to apply: the configured one, or with ``cutoff_hz: auto``
        the one ``found`` for the source (None: no low-pass); the pydub engine's recipe is
        the seed's 5 kHz unless a number is set."""
        cutoff = self.params.lowpass.cutoff_hz
        if isinstance(cutoff, str):
            return SEED_CUTOFF_HZ if self.params.engine == "pydub" else found
        return float(cutoff)

    def _lowpass_text(self, cutoff: float | None) -> str:
        """The row's ``lowpass_hz``: the cutoff applied, 'none', or '' without a low-pass."""
        if self.params.engine == "scipy" and "lowpass" not in self.params.chain:
            return ""
        return "none" if cutoff is None else f"{cutoff:g}"

    def chain(
        self, audio: np.ndarray, sr: int, auto: list[float], cutoff: float | None
    ) -> tuple[np.ndarray, list[float], float]:
        """Apply the configured chain to a (frames, channels) array, with the notches
        ``auto`` found and the low-pass ``cutoff`` (:meth:`cutoff`; None: no low-pass): the
        output, the notch frequencies applied, and the normalisation gain in dB."""
        p = self.params
        if p.engine == "pydub":
            from denoise.pydub_engine import pydub_recipe

            out = pydub_recipe(
                audio, sr, cutoff_hz=cutoff or SEED_CUTOFF_HZ, passes=p.lowpass.passes
            )
            peak_in = float(np.max(np.abs(audio))) or 1.0
            gain = 20 * math.log10((float(np.max(np.abs(out))) or peak_in) / peak_in)
            return out.astype(np.float32), [], gain
        from denoise.filters import apply

        out = audio.astype(np.float32)
        applied: list[float] = []
        gain = 0.0
        for step in p.chain:
            if step in ("highpass", "lowpass", "notch"):
                filters = self.filters(step, sr, auto, cutoff)
                if step == "notch":
                    applied = [f for f, _ in self.notches(sr, auto)]
                if filters:
                    out = apply(out, filters)
            elif step == "rnnoise":
                out = self.rnnoise(out, sr)
            elif step == "gate":
                from denoise.learned import spectral_gate

                out = spectral_gate(out, sr, p.gate)
            elif step == "normalize":
                from denoise.loudness import normalize

                out, gain = normalize(out, sr, p.normalize)
        return out.astype(np.float32), applied, gain

    def filters(
        self, step: str, sr: int, auto: list[float], cutoff: float | None = None
    ) -> list[Any]:
        """The SOS filters of one filtering step at rate ``sr`` (ValueError: cutoff ≥ Nyquist);
        the low-pass at ``cutoff``, none when it is None."""
        from denoise.filters import Filter, highpass_sos, lowpass_sos, notch_filter

        p = self.params
        if step == "lowpass":
            lp = p.lowpass
            if cutoff is None:
                return []
            return [Filter("lowpass", lowpass_sos(cutoff, lp.attenuation_db, sr), lp.passes)]
        if step == "highpass":
            hp = p.highpass
            return [
                Filter("highpass", highpass_sos(hp.cutoff_hz, hp.attenuation_db, sr), hp.passes)
            ]
        return [notch_filter(f, q, sr) for f, q in self.notches(sr, auto)]

    def notches(self, sr: int, auto: list[float]) -> list[tuple[float, float]]:
        """(Hz, Q) of the notch step at rate ``sr``: the explicit notches, then those found,
        each below Nyquist."""
        from denoise.filters import parse_notch

        q = self.params.notch.q
        wanted = [parse_notch(text, q) for text in self.params.notch.frequencies]
        wanted += [(f, q) for f in auto]
        return [(f, fq) for f, fq in wanted if 0 < f < sr / 2]

    def judge(self, after: dict[str, float | None]) -> str | None:
        """Why a slice is rejected by the configured thresholds (None: kept)."""
        p = self.params
        ovrl, snr = after.get("dnsmos_ovrl"), after.get("snr_db")
        if p.min_dnsmos_ovrl is not None and (ovrl is None or ovrl < p.min_dnsmos_ovrl):
            return f"DNSMOS OVRL {_fmt(ovrl)} below {p.min_dnsmos_ovrl:g}"
        if p.min_snr_db is not None and (snr is None or snr < p.min_snr_db):
            return f"SNR {_fmt(snr)} dB below {p.min_snr_db:g} dB"
        return None

    # --- helpers ----------------------------------------------------------------------------

    def _readable(self, path: Path, stack: contextlib.ExitStack) -> Path:
        """A file soundfile reads: the input itself, or (lossy stems, video) a float WAV
        decoded by ffmpeg into a temporary folder that ``stack`` removes."""
        if sndfile_pcm(path):
            return path
        work = Path(stack.enter_context(temp_dir(self.out_dir)))
        wav = work / "input.wav"
        decode_to_float_wav(path, wav)
        return wav

    def _scores(self, audio: np.ndarray, sr: int) -> dict[str, float | None]:
        if not self.params.scores:
            return dict.fromkeys(SCORE_NAMES)
        from denoise.quality import scores

        return {
            k: _finite(v)
            for k, v in scores(audio, sr, self.dnsmos, self.params.dnsmos_windows).items()
        }

    def _auto_notches(self, item: Item, own: np.ndarray | Path, sr: int) -> list[float]:
        """Notches found in the slice's whole source track, once per track; when its track is
        unknown, in ``own`` (the input's audio, or its file when it is streamed)."""
        p = self.params
        if not (p.engine == "scipy" and "notch" in p.chain and p.notch.auto and p.notch.max_auto):
            return []
        track = self.track_of(item) if self.track_of else None
        key, source = track if track else (item.id, own)
        with self._finding:
            return self._found[key] if key in self._found else self._find(key, source, sr)

    def _auto_lowpass(self, item: Item, own: np.ndarray | Path, sr: int) -> float | None:
        """With ``lowpass.cutoff_hz: auto``, the cutoff found in the slice's whole source track
        (its pauses hold the noise), once per track; when its track is unknown, in ``own``.
        None: no low-pass (clean high band, or not asked for)."""
        p = self.params
        if not (
            p.engine == "scipy" and "lowpass" in p.chain and isinstance(p.lowpass.cutoff_hz, str)
        ):
            return None
        track = self.track_of(item) if self.track_of else None
        key, source = track if track else (item.id, own)
        with self._finding:
            if key not in self._cutoffs:
                self._cutoffs[key] = self._find_cutoff(key, source, sr)
            return self._cutoffs[key]

    def _find_cutoff(self, key: str, source: np.ndarray | Path, sr: int) -> float | None:
        """:func:`denoise.filters.find_lowpass` on ``source`` (a lossy stem decoded first)."""
        from denoise.filters import find_lowpass

        lp = self.params.lowpass
        with contextlib.ExitStack() as stack:
            if isinstance(source, Path):
                source = self._readable(source, stack)
            found = find_lowpass(
                source,
                None if isinstance(source, Path) else sr,
                min_snr_db=lp.auto_snr_db,
                min_hz=lp.auto_min_hz,
            )
        if found is not None and found >= sr / 2:
            found = None
        log.info("%s: low-pass %s", key, "none" if found is None else f"at {found:g} Hz")
        return found

    def _find(self, key: str, source: np.ndarray | Path, sr: int) -> list[float]:
        """Search ``source`` for persistent narrow peaks; remember them under ``key``."""
        from denoise.filters import find_notches

        p = self.params
        with contextlib.ExitStack() as stack:
            if isinstance(source, Path):  # a lossy stem (m4a, mp3…) is decoded first
                source = self._readable(source, stack)
            found = find_notches(
                source,
                None if isinstance(source, Path) else sr,
                q=p.notch.q,
                max_notches=p.notch.max_auto,
                min_prominence_db=p.notch.min_prominence_db,
            )
        self._found[key] = [f for f in found if 0 < f < sr / 2]
        if self._found[key]:
            log.info("%s: notches at %s Hz", key, ", ".join(f"{f:.1f}" for f in found))
        return self._found[key]


def tracks_from(stage_dir: Path) -> TrackOf:
    """The source track of a slice: the row of ``stage_dir``'s manifest (the stage the slices
    were cut from reads it: the separate stage's vocals) whose id is the slice's parent, or
    the parent's nearest ancestor (the speaker filter's joins and parts are children of a
    slice)."""
    from malmoi.manifest import MANIFEST, read_records

    paths: dict[str, Path] | None = None

    def track_of(item: Item) -> tuple[str, Path] | None:
        nonlocal paths
        if paths is None:
            paths = {
                r["id"]: (stage_dir / r["path"]).absolute()
                for r in read_records(stage_dir / MANIFEST)
            }
        # a slice's parent is the track; a joined slice's or a part's is a slice of it, whose
        # id extends the track's (ids extend their parent's): the nearest ancestor listed
        parent = str(item.row.get("parent_id") or "")
        while parent and parent not in paths:
            parent = parent.rpartition(".")[0]
        path = paths.get(parent)
        return (parent, path) if path is not None and path.exists() else None

    return track_of


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 4)


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"
