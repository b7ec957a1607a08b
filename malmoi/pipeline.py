"""The pipeline's stages, in order: what each reads, how it is built, which of them a run takes.

One :class:`StageSpec` per stage, named like its CLI verb. The flow (``flows/build.py``) and the
CLI only walk :data:`PIPELINE`; a new stage (denoise, speaker filter, export…) plugs in as one
more entry here, touching no other stage. Prefect-free: stages run alone from the CLI too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from malmoi.config import PipelineConfig, PodcastSource, VideoSource
from malmoi.manifest import MANIFEST
from malmoi.stage import Item, Stage, items_from


class StageOrderError(ValueError):
    """A stage was asked for whose input stage has never run, or an unknown stage name."""


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline."""

    name: str  # the CLI verb, the Prefect task's name, the stage folder's name
    input: str | None  # the stage whose manifest it reads (None: the config's sources)
    make: Callable[[PipelineConfig], Stage]
    where: tuple[tuple[str, str], ...] = ()  # filter on the input rows, e.g. stem=vocals
    description: str = ""
    gather: Callable[[PipelineConfig], list[Item]] | None = None  # inputs from the sources
    applies: Callable[[PipelineConfig], bool] | None = None  # None: every config
    input_for: Callable[[PipelineConfig], str] | None = None  # input stage by config (else input)

    def items(self, cfg: PipelineConfig) -> list[Item]:
        """The stage's inputs: gathered from the config's sources (crawl, ingest), or the input
        stage's kept rows."""
        if self.gather is not None:
            return self.gather(cfg)
        upstream = input_of(cfg, self)
        if upstream is None:
            raise ValueError(f"{self.name} has neither an input stage nor a way to gather")
        return items_from(cfg.stage_dir(upstream), **dict(self.where))

    def used_by(self, cfg: PipelineConfig) -> bool:
        """Whether this config has work for the stage (crawl: only with web sources)."""
        return self.applies is None or self.applies(cfg)


def web_sources(cfg: PipelineConfig) -> list[VideoSource | PodcastSource]:
    """The config's sources that are crawled (``kind: video`` and ``kind: podcast``)."""
    return [s for s in cfg.sources if isinstance(s, VideoSource | PodcastSource)]


def _crawl(cfg: PipelineConfig) -> Stage:
    from crawl.stage import CrawlStage

    return CrawlStage(cfg.crawl, cfg.stage_dir("crawl"), web_sources(cfg))


def _crawl_items(cfg: PipelineConfig) -> list[Item]:
    from crawl.stage import discover

    return discover(web_sources(cfg), cfg.crawl, cfg.stage_dir("crawl"))


def _ingest_items(cfg: PipelineConfig) -> list[Item]:
    """Ingest's inputs: the files of the local and generated sources, then the crawl's
    downloads (their rows carry the URL as ``source``, so the lineage reaches the web)."""
    from ingest.sources import gather

    items = [
        i
        for src in cfg.sources
        if not isinstance(src, VideoSource | PodcastSource)
        for i in gather(src, cfg.output_dir / "raw", cfg.ingest)
    ]
    if web_sources(cfg):
        items += items_from(cfg.stage_dir("crawl"))
    return items


def _ingest(cfg: PipelineConfig) -> Stage:
    from ingest.stage import IngestStage

    return IngestStage(cfg.ingest, cfg.stage_dir("ingest"))


def _separate(cfg: PipelineConfig) -> Stage:
    from separate.stage import SeparateStage

    return SeparateStage(cfg.separate, cfg.stage_dir("separate"), models=cfg.models)


def _segment(cfg: PipelineConfig) -> Stage:
    from segment.stage import SegmentStage

    return SegmentStage(cfg.segment, cfg.stage_dir("segment"), models=cfg.models)


def _speaker_filter(cfg: PipelineConfig) -> Stage:
    from speaker_filter.stage import SpeakerFilterStage

    return SpeakerFilterStage(cfg.speaker_filter, cfg.stage_dir("speaker_filter"))


def _denoise_input(cfg: PipelineConfig) -> str:
    """Denoise reads the speaker filter's kept slices when the config uses it, else segment's."""
    return "speaker_filter" if cfg.speaker_filter.used else "segment"


def _denoise(cfg: PipelineConfig) -> Stage:
    from denoise.stage import DenoiseStage, tracks_from

    return DenoiseStage(
        cfg.denoise,
        cfg.stage_dir("denoise"),
        models=cfg.models,
        track_of=tracks_from(cfg.stage_dir("separate")),
    )


def _export(cfg: PipelineConfig) -> Stage:
    from export.provenance import models_used
    from export.stage import ExportStage

    return ExportStage(
        cfg.export,
        cfg.stage_dir("export"),
        lineage_root=cfg.output_dir,
        speaker=cfg.speaker_filter.profile or cfg.name,
        provenance=lambda: {"models": models_used(cfg)},
        dataset_name=cfg.name,
    )


PIPELINE: tuple[StageSpec, ...] = (
    StageSpec(
        "crawl",
        None,
        _crawl,
        description="download the video and podcast sources",
        gather=_crawl_items,
        applies=lambda cfg: bool(web_sources(cfg)),
    ),
    StageSpec(
        "ingest",
        None,
        _ingest,
        description="decode every input to working WAVs",
        gather=_ingest_items,
    ),
    StageSpec("separate", "ingest", _separate, description="split into vocals and accompaniment"),
    StageSpec(
        "segment",
        "separate",
        _segment,
        where=(("stem", "vocals"),),
        description="find speech and gender, cut slices",
    ),
    StageSpec(
        "speaker_filter",
        "segment",
        _speaker_filter,
        description="keep the target speaker's slices (Resemblyzer, cohort-normalised)",
        applies=lambda cfg: cfg.speaker_filter.used,
    ),
    StageSpec(
        "denoise",
        "speaker_filter",
        _denoise,
        description="filter, normalise and score every slice",
        input_for=_denoise_input,
    ),
    StageSpec(
        "export",
        "denoise",
        _export,
        description="write the dataset: WAVs, manifests, splits, texts, card",
    ),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in PIPELINE)


def spec(name: str) -> StageSpec:
    for s in PIPELINE:
        if s.name == name:
            return s
    raise StageOrderError(f"unknown stage '{name}'; the stages are: {', '.join(STAGE_NAMES)}")


def as_names(value: str | Iterable[str] | None) -> list[str]:
    """Stage names from a list, or from one string separated by commas (as
    ``prefect deployment run … --param only=separate,segment`` gives); each checked."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = [p.strip() for p in parts if p and p.strip()]
    for name in names:
        spec(name)
    return names


def select(
    only: str | Sequence[str] | None = None, from_stage: str | None = None
) -> list[StageSpec]:
    """The stages a run takes, in pipeline order: ``only`` those named, or ``from_stage`` and
    every one after it, or all."""
    chosen = as_names(only)
    if chosen and from_stage:
        raise StageOrderError("give either only or from_stage, not both")
    if from_stage:
        start = STAGE_NAMES.index(spec(from_stage).name)
        return list(PIPELINE[start:])
    if chosen:
        return [s for s in PIPELINE if s.name in chosen]
    return list(PIPELINE)


def input_of(cfg: PipelineConfig, stage: StageSpec) -> str | None:
    """The stage whose manifest ``stage`` reads with this config (ingest reads the crawl's
    when the config has web sources)."""
    if stage.name == "ingest" and web_sources(cfg):
        return "crawl"
    if stage.input_for is not None:
        return stage.input_for(cfg)
    return stage.input


def check_input(cfg: PipelineConfig, stage: StageSpec, running: Iterable[str] = ()) -> None:
    """Fail fast when ``stage``'s input stage has never run (and is not run before it now)."""
    upstream = input_of(cfg, stage)
    if upstream is None or upstream in set(running):
        return
    manifest = cfg.stage_dir(upstream) / MANIFEST
    if not manifest.exists():
        raise StageOrderError(
            f"{stage.name} reads the {upstream} stage's output, which does not exist yet "
            f"({manifest}): run {upstream} first (--only {upstream}, or --from {upstream})"
        )


def pending(cfg: PipelineConfig, stages: Sequence[StageSpec], retry_failed: bool = False) -> int:
    """How many inputs the stages would process now, summed (read-only; the first stage's
    inputs are gathered from the sources, a cheap look when the media are already there).
    Stops counting at the first stage with work: the ones after it then change anyway."""
    for stage_spec in stages:
        if not stage_spec.used_by(cfg):
            continue
        count = stage_spec.make(cfg).pending(
            stage_spec.items(cfg), retry_failed, prune=stage_spec.gather is None
        )
        if count:
            return count
    return 0


def failed_before(cfg: PipelineConfig, stage: StageSpec) -> int:
    """How many inputs stand failed in a stage's ``failures.csv``."""
    from malmoi.manifest import FAILURES, read_records

    return len(read_records(cfg.stage_dir(stage.name) / FAILURES))
