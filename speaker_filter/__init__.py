"""Speaker filter stage: keep the slices whose Resemblyzer embedding is close to the target
speaker's."""

from typing import Any

from malmoi.config import SpeakerFilterConfig
from malmoi.registry import Cli, Flag, Option, StageSpec


def _cli_config(values: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    profile, save = values["profile"], flags["save-profile"]
    if profile and save:
        raise ValueError(
            "give --profile (use a saved one) or --save-profile (save the references'), not both"
        )
    if save and not values["references"]:
        raise ValueError("--save-profile needs --reference")
    if not (values["references"] or profile or values["dominant"]):
        raise ValueError("give --reference, --profile or --dominant")
    return values | {"profile": save or profile}


def _check(stage: Any) -> None:
    """The references or the profile are there and readable, before any work."""
    from malmoi.errors import ItemError

    try:
        stage.digest  # noqa: B018
    except ItemError as exc:
        raise ValueError(str(exc)) from None


SPEC = StageSpec(
    name="speaker_filter",
    stage="speaker_filter.stage:SpeakerFilterStage",
    config=SpeakerFilterConfig,
    description="keep the target speaker's slices (Resemblyzer, cohort-normalised)",
    applies=lambda cfg: cfg.speaker_filter.used,
    models=lambda cfg: ["resemblyzer:encoder"],
    weights=lambda cfg: (
        [("speaker filter cohort", "speaker_filter", "cohort_embeddings.npy")]
        if cfg.speaker_filter.cohort
        else []
    ),
    cli=Cli(
        inputs="audio",
        options=(
            Option(
                "references",
                "reference",
                "A clean clip (or folder) of the target voice "
                "(repeat, or give several after one --reference).",
            ),
            Option(
                "threshold",
                help="auto (the run's own voice model, seeded above the "
                "cohort-impostor bound), cohort-bound, or a minimum normalised score.",
            ),
            Option("profile", help="Use the speaker profile saved under this name."),
            Option("profiles_dir", help="Folder of saved profiles (default: beside the models)."),
            Option("dominant", help="No reference: keep the most frequent voice of the inputs."),
            Option("cohort", help="Normalise scores against the cohort."),
            Option("join_gap"),
            Option("join_max"),
        ),
        flags=(
            Flag("save-profile", str | None, None, "Save the references' profile under this name."),
            Flag(
                "rescore",
                bool,
                False,
                "Score every slice again from its cached embedding (none recomputed).",
            ),
        ),
        apply=_cli_config,
        check=_check,
        run=lambda flags: {"force": flags["rescore"]},
        outputs=lambda out: (
            f"manifest: {out / 'manifest.csv'}; threshold: {out / 'threshold.json'}"
        ),
        help="Keep the target speaker's slices: each slice embedded once (cached in "
        "OUT/embeddings/), scored against the profile, split by the threshold into "
        "OUT/manifest.csv and OUT/rejected.csv, with OUT/threshold.json and OUT/scores.png.",
    ),
)
