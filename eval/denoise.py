"""What each denoise element buys: LibriSpeech speech from ../shared with crackle, a whine, hum,
broadband and MUSAN noise added at known SNRs, run through every element alone, the whole chain
and the seed's pydub recipe, scored against the clean reference (SI-SDR) and blind (DNSMOS OVRL,
WADA-SNR), and what each costs in bandwidth: the log-spectral distance to the clean speech from
4 to 8 kHz (:func:`lsd_band`), which neither SI-SDR nor DNSMOS (16 kHz) sees. ``malmoi eval
denoise`` (:func:`eval.commands.denoise`) prints the README's table.

Every configuration runs through :meth:`denoise.stage.DenoiseStage.chain`, the stage's own code.
SI-SDR is scale-invariant, so the normalisation step does not change it; DNSMOS is measured on
level-normalised audio for every configuration (−23 LUFS), so that level is not what it scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval import noises
from eval.common import markdown_table, mix_at_snr, si_sdr
from malmoi.config import DenoiseConfig, NormalizeConfig
from malmoi.logs import get_logger

log = get_logger(__name__)

SAMPLE_RATE = 22050  # LibriSpeech (16 kHz) upsampled: room for an 8 kHz tone and crackle
LSD_BAND_HZ = (4000.0, 8000.0)  # the bandwidth measure's band: LibriSpeech has nothing above 8k
LSD_FLOOR_DB = 80.0  # powers floored this far below the reference's strongest bin
LSD_ACTIVE_DB = 40.0  # frames scored: the reference within this of its loudest frame
NOISES = ("crackle", "whine", "hum", "broadband", "musan")
SNRS = (5.0, 10.0, 20.0)

# name -> the DenoiseConfig fields that differ from "nothing but normalisation"
CONFIGS: dict[str, dict[str, Any]] = {
    "noisy input": {"chain": ["normalize"]},
    "lowpass 5 kHz ×2": {"chain": ["lowpass", "normalize"], "lowpass": {"cutoff_hz": 5000}},
    "lowpass (auto)": {"chain": ["lowpass", "normalize"]},
    "notch (auto)": {"chain": ["notch", "normalize"]},
    "highpass 70 Hz": {"chain": ["highpass", "normalize"]},
    "rnnoise": {"chain": ["rnnoise", "normalize"]},
    "gate": {"chain": ["gate", "normalize"]},
    "chain: notch → lowpass": {"chain": ["notch", "lowpass", "normalize"]},
    "chain, lowpass 5 kHz (old default)": {
        "chain": ["notch", "lowpass", "normalize"],
        "lowpass": {"cutoff_hz": 5000},
    },
    "chain + rnnoise": {"chain": ["notch", "lowpass", "rnnoise", "normalize"]},
    "chain + highpass + rnnoise": {
        "chain": ["highpass", "notch", "lowpass", "rnnoise", "normalize"]
    },
    "pydub recipe (seed)": {"engine": "pydub"},
}


@dataclass(frozen=True)
class Case:
    clip: str
    noise: str
    snr_db: float
    clean: np.ndarray  # (n,) float32
    noisy: np.ndarray


@dataclass(frozen=True)
class Score:
    config: str
    noise: str
    snr_db: float
    clip: str
    si_sdr_in: float
    si_sdr_out: float
    ovrl_in: float
    ovrl_out: float
    ovrl_clean: float
    wada_out: float
    lsd_in: float = math.nan  # log-spectral distance 4-8 kHz to the clean speech (dB)
    lsd_out: float = math.nan

    @property
    def improvement(self) -> float:
        return self.si_sdr_out - self.si_sdr_in


def lsd_band(
    estimate: np.ndarray,
    reference: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    band_hz: tuple[float, float] = LSD_BAND_HZ,
) -> float:
    """Log-spectral distance (dB) of ``estimate`` to ``reference`` (mono, equal length) in
    ``band_hz`` (4-8 kHz: the speech a 5 kHz low-pass removes, below the 16-kHz recordings'
    Nyquist): the RMS over the band's STFT bins of the difference of their power in dB,
    averaged over the frames where the reference is active (within 40 dB of its loudest
    frame). ``estimate`` is first scaled by least squares onto ``reference`` (its level does not
    count); powers are floored 80 dB below the reference's strongest bin, so a band removed
    entirely costs what the reference has there. 0 for a copy."""
    from scipy import signal

    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    alpha = np.dot(est, ref) / max(np.dot(est, est), 1e-20)
    nperseg = 1 << math.ceil(math.log2(0.04 * sample_rate))  # about 40 ms
    freqs, _, e_spec = signal.stft(alpha * est, sample_rate, nperseg=nperseg)
    _, _, r_spec = signal.stft(ref, sample_rate, nperseg=nperseg)
    e_pow, r_pow = np.abs(e_spec) ** 2, np.abs(r_spec) ** 2
    floor = max(float(r_pow.max()), 1e-30) * 10 ** (-LSD_FLOOR_DB / 10)
    frame_db = 10 * np.log10(r_pow.sum(axis=0) + floor)
    active = frame_db >= frame_db.max() - LSD_ACTIVE_DB
    band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    diff = 10 * np.log10(e_pow[band][:, active] + floor) - 10 * np.log10(
        r_pow[band][:, active] + floor
    )
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=0))))


def speech_clips(shared: Path, count: int = 4, seconds: float = 6.0) -> dict[str, np.ndarray]:
    """``count`` clean clips of different speakers (3 F, 3 M in the utterances folder) at
    :data:`SAMPLE_RATE`, each ``seconds`` long."""
    import librosa

    speakers = sorted((shared / "data/librispeech/utterances").iterdir())
    clips = {}
    for folder in speakers[:count]:
        files = sorted(folder.glob("*.flac"))
        audio = np.concatenate([librosa.load(str(f), sr=SAMPLE_RATE)[0] for f in files[:3]])
        clips[folder.name] = audio[: int(seconds * SAMPLE_RATE)].astype(np.float32)
    return clips


def noise_of(kind: str, n: int, shared: Path, seed: int) -> np.ndarray:
    if kind == "crackle":
        return noises.crackle(n, SAMPLE_RATE, seed=seed)
    if kind == "whine":
        return noises.whine(n, SAMPLE_RATE, 6000.0)
    if kind == "hum":
        return noises.hum(n, SAMPLE_RATE, 60.0)
    if kind == "broadband":
        return noises.broadband(n, SAMPLE_RATE, seed=seed)
    if kind == "musan":
        return noises.musan_noise(shared, n, SAMPLE_RATE)
    raise ValueError(f"unknown noise kind {kind!r}; known: {', '.join(NOISES)}")


def cases(
    shared: Path,
    clips: int = 4,
    noise_kinds: Sequence[str] = NOISES,
    snrs: Sequence[float] = SNRS,
    seconds: float = 6.0,
) -> list[Case]:
    out = []
    for i, (name, clean) in enumerate(speech_clips(shared, clips, seconds).items()):
        for kind in noise_kinds:
            noise = noise_of(kind, len(clean), shared, seed=i)
            for snr in snrs:
                out.append(Case(name, kind, snr, clean, mix_at_snr(clean, noise, snr)))
    return out


def evaluate(
    cases_: Sequence[Case],
    configs: dict[str, dict[str, Any]] = CONFIGS,
    dnsmos: Any = None,
) -> list[Score]:
    """Score every configuration on every case."""
    from denoise.filters import find_lowpass, find_notches
    from denoise.loudness import normalize
    from denoise.quality import wada_snr
    from denoise.stage import DenoiseStage

    level = NormalizeConfig()
    stages = {}
    for name, fields in configs.items():
        stage = DenoiseStage(DenoiseConfig(scores=False, **fields), Path("/nonexistent"))
        stage.ensure_setup()
        stages[name] = stage
    clean_ovrl: dict[str, float] = {}
    scores: list[Score] = []
    for case in cases_:
        if case.clip not in clean_ovrl:
            clean_ovrl[case.clip] = _ovrl(
                dnsmos, normalize(case.clean[:, None], SAMPLE_RATE, level)[0]
            )
        noisy = case.noisy[:, None]
        ovrl_in = _ovrl(dnsmos, normalize(noisy, SAMPLE_RATE, level)[0])
        si_in = si_sdr(case.noisy, case.clean)
        lsd_in = lsd_band(case.noisy, case.clean)
        auto = find_notches(case.noisy, SAMPLE_RATE)
        found = find_lowpass(case.noisy, SAMPLE_RATE)  # what lowpass.cutoff_hz: auto applies
        for name, stage in stages.items():
            out, _, _ = stage.chain(noisy, SAMPLE_RATE, auto, stage.cutoff(found))
            mono = out[:, 0]
            scores.append(
                Score(
                    config=name,
                    noise=case.noise,
                    snr_db=case.snr_db,
                    clip=case.clip,
                    si_sdr_in=si_in,
                    si_sdr_out=si_sdr(mono, case.clean),
                    ovrl_in=ovrl_in,
                    ovrl_out=_ovrl(dnsmos, normalize(out, SAMPLE_RATE, level)[0]),
                    ovrl_clean=clean_ovrl[case.clip],
                    wada_out=float(wada_snr(mono)),
                    lsd_in=lsd_in,
                    lsd_out=lsd_band(mono, case.clean),
                )
            )
    return scores


def _ovrl(dnsmos: Any, audio: np.ndarray) -> float:
    if dnsmos is None:
        return math.nan
    return float(dnsmos.score(audio, SAMPLE_RATE)["ovrl"])


def summary(scores: Sequence[Score]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per configuration and noise kind: mean SI-SDR improvement (dB), mean DNSMOS OVRL after
    and mean log-spectral distance from 4 to 8 kHz to the clean speech (dB), over clips and SNRs;
    plus "all" over every noise kind."""
    table: dict[str, dict[str, tuple[float, float, float]]] = {}
    for config in dict.fromkeys(s.config for s in scores):
        mine = [s for s in scores if s.config == config]
        row = {}
        for kind in [*dict.fromkeys(s.noise for s in mine), "all"]:
            sel = [s for s in mine if kind in ("all", s.noise)]
            row[kind] = (
                float(np.mean([s.improvement for s in sel])),
                float(np.mean([s.ovrl_out for s in sel])),
                float(np.mean([s.lsd_out for s in sel])),
            )
        table[config] = row
    return table


CLEAN_BAND_NOISE = "hum"  # leaves 4-8 kHz as clean as the speech: what is lost there is loss


def table(scores: Sequence[Score]) -> str:
    """The README's Markdown table: ΔSI-SDR (dB) / DNSMOS OVRL per noise kind, all SNRs, and
    the bandwidth cost: the log-spectral distance from 4 to 8 kHz to the clean speech (dB,
    lower is closer) with hum (whose 4-8 kHz is clean: any distance is speech lost) and over
    every noise kind."""
    data = summary(scores)
    kinds = list(next(iter(data.values())))
    lsd_kinds = [k for k in (CLEAN_BAND_NOISE, "all") if k in kinds]
    rows = [
        [config]
        + [f"{row[k][0]:+.1f} / {row[k][1]:.2f}" for k in kinds]
        + [f"{row[k][2]:.1f}" for k in lsd_kinds]
        for config, row in data.items()
    ]
    header = ["configuration", *kinds, *(f"LSD 4-8k {k}" for k in lsd_kinds)]
    lines = [markdown_table(header, rows, right=range(1, len(header)))]
    clean = np.mean([s.ovrl_clean for s in scores])
    noisy = np.mean([s.ovrl_in for s in scores])
    lsd_noisy = {k: np.mean([s.lsd_in for s in scores if k in ("all", s.noise)]) for k in kinds}
    lines.append("")
    lines.append(
        f"Cells: SI-SDR improvement over the noisy input (dB) / DNSMOS OVRL after; "
        f"{len({s.clip for s in scores})} LibriSpeech clips × SNRs "
        f"{', '.join(f'{x:g}' for x in sorted({s.snr_db for s in scores}))} dB. "
        f"OVRL of the clean speech {clean:.2f}, of the noisy inputs {noisy:.2f}. "
        "LSD 4-8k: log-spectral distance from 4 to 8 kHz to the clean speech (dB, lower is "
        "closer, 0 a copy: the bandwidth an element keeps or costs), with hum (whose 4-8 kHz "
        "is clean) and over every noise kind; the noisy inputs': "
        + ", ".join(f"{k} {v:.1f}" for k, v in lsd_noisy.items())
        + "."
    )
    return "\n".join(lines)
