"""Denoise stage: filter (notches, low-pass…), normalise and score each speech slice."""

from typing import Any

from malmoi.config import DenoiseConfig
from malmoi.registry import Cli, Flag, Option, StageSpec


def _cli_config(values: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """The chain from the verb's flags: a high-pass when its cutoff is given, notches when any
    is given or found, the low-pass unless --no-lowpass, RNNoise and gating when asked for,
    normalisation unless --normalize off."""
    chain = ["highpass"] if flags["highpass"] is not None else []
    chain += ["notch"] if (flags["notch"] or values["notch.auto"]) else []
    chain += [] if flags["no-lowpass"] else ["lowpass"]
    chain += ["rnnoise"] if flags["rnnoise"] else []
    chain += ["gate"] if flags["gate"] else []
    chain += [] if values["normalize.mode"] == "off" else ["normalize"]
    out = values | {"chain": chain, "notch.frequencies": flags["notch"] or []}
    if flags["highpass"] is not None:
        out["highpass.cutoff_hz"] = flags["highpass"]
    return out


SPEC = StageSpec(
    name="denoise",
    stage="denoise.stage:DenoiseStage",
    config=DenoiseConfig,
    description="filter, normalise and score every slice",
    models=lambda cfg: ["dnsmos:p835"] if cfg.denoise.scores else [],
    cli=Cli(
        inputs="media",
        options=(
            Option("engine", help="scipy: the chain; pydub: the seed's recipe."),
            Option(
                "lowpass.cutoff_hz",
                "lowpass",
                "Low-pass cutoff, Hz, or auto: per input, only where hiss or crackle leads the "
                "speech above some frequency.",
            ),
            Option(
                "lowpass.attenuation_db",
                "attenuation",
                "Low-pass stop-band attenuation one octave up, dB.",
            ),
            Option("lowpass.passes", "passes", "Times the low-pass is applied."),
            Option(
                "notch.auto",
                "auto-notch",
                "Find persistent hum and whines per input and notch them.",
            ),
            Option("normalize.mode", "normalize", "Level normalisation."),
            Option("normalize.target_lufs", "target-lufs", "Loudness target, LUFS."),
            Option("normalize.ceiling_db", "ceiling", "True-peak ceiling, dBTP."),
            Option("scores", help="WADA-SNR and DNSMOS before and after, per file."),
            Option("min_dnsmos_ovrl", help="Reject outputs with a lower DNSMOS OVRL."),
            Option("min_snr_db", help="Reject outputs with a lower estimated SNR, dB."),
        ),
        flags=(
            Flag("no-lowpass", bool, False, "Skip the low-pass."),
            Flag("highpass", float | None, None, "Add a high-pass at this cutoff, Hz (e.g. 70)."),
            Flag("notch", list[str] | None, None, "A notch HZ or HZ:Q, e.g. 6000:30 (repeat)."),
            Flag("rnnoise", bool, False, "Add RNNoise before normalising."),
            Flag("gate", bool, False, "Add spectral gating before normalising."),
        ),
        apply=_cli_config,
        help="Filter (notches and a low-pass cutoff found per input, zero-phase), normalise "
        "loudness and score quality before and after: OUT/<id>/<id>.denoised.wav, "
        "OUT/manifest.csv.",
    ),
)
