"""What each denoise element buys: LibriSpeech speech from ../shared with crackle, a whine, hum,
broadband and MUSAN noise added at known SNRs, run through every element alone, the whole chain
and the seed's pydub recipe, scored against the clean reference (SI-SDR) and blind (DNSMOS OVRL,
WADA-SNR). ``malmoi eval denoise`` (:func:`eval.commands.denoise`) prints the README's table.

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
NOISES = ("crackle", "whine", "hum", "broadband", "musan")
SNRS = (5.0, 10.0, 20.0)

# name -> the DenoiseConfig fields that differ from "nothing but normalisation"
CONFIGS: dict[str, dict[str, Any]] = {
    "noisy input": {"chain": ["normalize"]},
    "lowpass 5 kHz ×2": {"chain": ["lowpass", "normalize"]},
    "notch (auto)": {"chain": ["notch", "normalize"]},
    "highpass 70 Hz": {"chain": ["highpass", "normalize"]},
    "rnnoise": {"chain": ["rnnoise", "normalize"]},
    "gate": {"chain": ["gate", "normalize"]},
    "chain: notch → lowpass": {"chain": ["notch", "lowpass", "normalize"]},
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

    @property
    def improvement(self) -> float:
        return self.si_sdr_out - self.si_sdr_in


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
    from denoise.filters import find_notches
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
        auto = find_notches(case.noisy, SAMPLE_RATE)
        for name, stage in stages.items():
            out, _, _ = stage.chain(noisy, SAMPLE_RATE, auto)
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
                )
            )
    return scores


def _ovrl(dnsmos: Any, audio: np.ndarray) -> float:
    if dnsmos is None:
        return math.nan
    return float(dnsmos.score(audio, SAMPLE_RATE)["ovrl"])


def summary(scores: Sequence[Score]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per configuration and noise kind: mean SI-SDR improvement (dB) and mean DNSMOS OVRL
    after, over clips and SNRs; plus "all" over every noise kind."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for config in dict.fromkeys(s.config for s in scores):
        mine = [s for s in scores if s.config == config]
        row = {}
        for kind in [*dict.fromkeys(s.noise for s in mine), "all"]:
            sel = [s for s in mine if kind in ("all", s.noise)]
            row[kind] = (
                float(np.mean([s.improvement for s in sel])),
                float(np.mean([s.ovrl_out for s in sel])),
            )
        table[config] = row
    return table


def table(scores: Sequence[Score]) -> str:
    """The README's Markdown table: ΔSI-SDR (dB) / DNSMOS OVRL per noise kind, all SNRs."""
    data = summary(scores)
    kinds = list(next(iter(data.values())))
    rows = [
        [config] + [f"{row[k][0]:+.1f} / {row[k][1]:.2f}" for k in kinds]
        for config, row in data.items()
    ]
    lines = [markdown_table(["configuration", *kinds], rows, right=range(1, len(kinds) + 1))]
    clean = np.mean([s.ovrl_clean for s in scores])
    noisy = np.mean([s.ovrl_in for s in scores])
    lines.append("")
    lines.append(
        f"Cells: SI-SDR improvement over the noisy input (dB) / DNSMOS OVRL after; "
        f"{len({s.clip for s in scores})} LibriSpeech clips × SNRs "
        f"{', '.join(f'{x:g}' for x in sorted({s.snr_db for s in scores}))} dB. "
        f"OVRL of the clean speech {clean:.2f}, of the noisy inputs {noisy:.2f}."
    )
    return "\n".join(lines)
