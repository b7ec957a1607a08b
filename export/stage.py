"""Export stage: the training-ready dataset, from the last stage's kept slices.

Reads: the slices of the last stage before it in ``build-dataset`` (transcribe's, or denoise's
when transcribe is off; any stage folder from the CLI) and, for each slice's origin and text,
the manifests of the stages before it (:mod:`malmoi.lineage`).
Writes, into its folder (the dataset):

- ``wavs/<id>.wav``: mono 16-bit PCM at ``sample_rate`` (soxr very-high-quality resampling),
  scaled down when its peak would clip;
- per slice: its text and where the text came from, by the ``text`` policy
  (:meth:`ExportStage.text_of`): ``auto`` the transcribe stage's choice (the subtitle where it
  agrees with the audio, else the ASR text), or for a slice transcribe did not see the
  source's subtitles (:mod:`transcribe.subtitles`), then a text a stage before wrote;
  ``subtitles`` or ``asr`` that text only; ``none`` no text. Then speaker, gender, source URL,
  title, licence and id, offset and end in the source, and the stored scores (WADA-SNR and
  DNSMOS OVRL after denoise, the speaker filter's similarity);
- after the loop (:meth:`ExportStage.after_run`): each source's split, drawn from (seed, source
  id) so that adding sources never moves one; ``manifest.jsonl`` (NVIDIA NeMo), ``metadata.csv``
  (Hugging Face audiofolder), ``metadata.txt`` (LJSpeech; its normalized text is the Korean
  spoken form, :func:`export.layout.normalized_text`), ``dataset.json`` (limits, splits, counts,
  provenance, and when the slices were transcribed what transcribe did to them,
  :mod:`export.transcripts`) and the card (``README.md``, ``plots/``);
- ``.dedup/``: the duplicate check's fingerprints, hashes and the WAVs of rejected duplicates.

Slices outside the configured limits (duration, SNR, DNSMOS, similarity) go to ``rejected.csv``
with the reason; so do later copies of audio already in the dataset (``duplicate of <id>``,
:mod:`export.dedup`), found before the splits are drawn. The split settings, the speaker name
and the duplicate check's settings are not part of the items' keys: a new seed or threshold
rewrites the metadata without writing any audio again.

A person's review (``<output_dir>/review/decisions.jsonl``, :mod:`export.review`) is honoured the
same way, outside the keys: a slice rejected in review goes to ``rejected.csv`` as "rejected in
review", one kept is exported past the limits (and, when a filter rejected it, from the latest
stage folder that holds its audio), an edited text replaces the text (``text_source`` review).
The decisions are read from the build's ``output_dir`` (a config's; for ``malmoi export
STAGE_DIR``, the folder that holds STAGE_DIR, where a build keeps its stage folders).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf
from pydantic import Field

from export.card import package_versions, write_card
from export.dedup import deduplicate, require_fpcalc
from export.layout import (
    COLUMNS,
    INFO,
    LIMITS,
    MANIFEST,
    METADATA_CSV,
    METADATA_TXT,
    NULLABLE_NUMBER_COLUMNS,
    SPLITS,
    WAVS,
    ljspeech_field,
    normalized_text,
)
from export.review import (
    REJECTED_IN_REVIEW,
    TEXT_SOURCE,
    counts,
    digest,
    judge,
    kept_elsewhere,
    needs_audio,
    verdict,
)
from export.transcripts import transcribe_summary
from malmoi.audio import as_float
from malmoi.config import ExportConfig
from malmoi.errors import ItemError
from malmoi.files import atomic_path, atomic_write_text
from malmoi.lineage import Lineage, Origin
from malmoi.logs import get_logger
from malmoi.manifest import MANIFEST as STAGE_MANIFEST
from malmoi.manifest import REJECTED, AudioRow, ProgressRow, Table, read_records, rejected_model
from malmoi.stage import Item, Result, Stage, StageReport
from review.decisions import Decision
from review.decisions import load as load_decisions
from review.decisions import path_of as decisions_path

log = get_logger(__name__)

PEAK = 0.99  # full scale: exported audio never clips
# the dataset's columns looked up through the slice's lineage: the nearest row (the slice's
# own, then its ancestors') that has the stage column
ATTRIBUTES = {
    "source_offset": "start",
    "source_end": "stop",
    "gender": "gender",
    "snr_db": "snr_db_after",
    "dnsmos_ovrl": "dnsmos_ovrl_after",
    "similarity": "similarity",
}


class ExportRow(AudioRow):
    """One slice of the dataset."""

    text: str = Field("", description="the slice's transcript ('' when none)")
    text_source: str = Field(
        "",
        description="subtitles, asr, the stage that wrote the text, review (a person's edit), "
        "or '' when there is no text",
    )
    speaker: str = ""
    gender: str = Field("", description="as the segment stage told it")
    source_id: str = Field("", description="the episode / input file (the split unit)")
    source_url: str = Field("", description="the episode URL, or the original file's path")
    source_title: str = ""
    licence: str = ""
    source_offset: float | None = Field(
        None, description="seconds into the source (not NeMo's offset: each WAV is whole)"
    )
    source_end: float | None = None
    snr_db: float | None = Field(None, description="WADA-SNR after denoise")
    dnsmos_ovrl: float | None = Field(None, description="DNSMOS P.835 OVRL after denoise")
    similarity: float | None = Field(None, description="speaker filter: cosine to the profile")
    gain_db: float = Field(0.0, description="gain applied to keep the peak under full scale")
    split: str = Field("", description="train, validation or test (by source)")


def draw(source_id: str, seed: int) -> float:
    """A uniform number in [0, 1) from sha256(seed, source id)."""
    digest = hashlib.sha256(f"{seed}\0{source_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(u: float, shares: dict[str, float]) -> str:
    """The split a draw ``u`` falls in, the shares laid end to end (train, validation, test)."""
    edge = 0.0
    for name in SPLITS:
        edge += shares[name]
        if u < edge:
            return name
    return next(n for n in reversed(SPLITS) if shares[n] > 0)


def assign_splits(source_ids: set[str], seed: int, shares: dict[str, float]) -> dict[str, str]:
    """Each source's split from its own draw, so a source keeps its split when others are
    added; train is never empty: when no draw lands there, the lowest draw's source goes there
    (a dataset of one source is all train)."""
    draws = {s: draw(s, seed) for s in source_ids}
    out = {s: split_of(u, shares) for s, u in draws.items()}
    if draws and shares["train"] > 0 and "train" not in out.values():
        out[min(draws, key=lambda s: draws[s])] = "train"
    return out


class ExportStage(Stage[ExportConfig, ExportRow]):
    """Write each slice as a dataset WAV with its text and origin; the metadata files after."""

    name: ClassVar[str] = "export"
    version: ClassVar[str] = "1"
    row_type: ClassVar[type[ExportRow]] = ExportRow
    settings_file: ClassVar[str] = INFO  # dataset.json: a new seed, split or speaker rewrites it
    unkeyed_params: ClassVar[frozenset[str]] = frozenset(
        {"splits", "seed", "speaker", "dedup", "dedup_max_ber", "dedup_min_overlap"}
    )

    def __init__(
        self,
        params: ExportConfig,
        out_dir: Path,
        lineage_root: Path | None = None,
        speaker: str = "",
        provenance: Callable[[], dict[str, Any]] | None = None,
        dataset_name: str = "",
        input_folder: Path | None = None,
        unused_stages: frozenset[str] = frozenset(),
        review_root: Path | None = None,
    ):
        """``lineage_root``: a build's ``output_dir``; ``input_folder``: the stage folder the
        slices are read from, when they are not a build's (its recorded inputs are the lineage,
        and the speaker filter's profile there names the speaker); ``unused_stages``: stages
        the build does not run, whose folders under ``lineage_root`` are left out of the
        lineage (an earlier build's transcribe folder gives no text once transcribe is off);
        ``review_root``: the folder whose ``review/decisions.jsonl`` holds a person's
        decisions (default: ``lineage_root``, else the folder holding ``input_folder``; with
        neither, no review)."""
        super().__init__(params, out_dir)
        self.input_folder = input_folder
        if review_root is None:
            review_root = lineage_root
        if review_root is None and input_folder is not None:
            review_root = Path(input_folder).absolute().parent
        self.review_root = review_root
        self._decisions: dict[str, Decision] | None = None  # read by inputs()
        self._recorded: dict[str, dict[str, Any]] = {}  # id -> export's row (rejected: reason)
        self._restored: list[str] = []  # kept in review, read from an earlier stage's folder
        self._missing: list[str] = []  # kept in review, no audio found
        if input_folder is not None and not (params.speaker or speaker):
            speaker = profile_in(input_folder)
        self.dataset_name = dataset_name or Path(out_dir).name
        self.lineage_root = lineage_root
        self.unused_stages = unused_stages
        self.lineage = Lineage(None)  # read in setup(): only a run with slices to export needs it
        self._lineage_read: Lineage | None = None  # read_lineage()'s, for this run
        self.speaker = params.speaker or speaker
        self.provenance = provenance  # called when the metadata are written (it hashes models)
        self.text_engine: Any = None
        self._bad_text: set[str] = set()  # media whose subtitles do not parse (warned once)

    @classmethod
    def from_config(cls, cfg: Any) -> ExportStage:
        """The dataset of a build: the lineage of its stage folders, the speaker filter's
        profile (else the build's name) as the speaker, the models of its stages."""
        from export.provenance import models_used

        return cls(
            cfg.export,
            cfg.stage_dir(cls.name),
            lineage_root=cfg.output_dir,
            speaker=cfg.speaker_filter.profile or cfg.name,
            provenance=lambda: {"models": models_used(cfg)},
            dataset_name=cfg.name,
            unused_stages=frozenset() if cfg.transcribe.enabled else frozenset({"transcribe"}),
            review_root=cfg.output_dir,
        )

    def setup(self) -> None:
        if self.params.dedup:  # before any slice is written, not only after the loop
            require_fpcalc()
        self.lineage = self.read_lineage()
        if self.params.text in ("auto", "subtitles"):  # for slices transcribe did not see
            from transcribe.subtitles import SubtitleText

            self.text_engine = SubtitleText(self.params.subtitle_languages)

    def read_lineage(self) -> Lineage:
        """The lineage of the slices: the recorded inputs of ``input_folder``, else the stage
        folders under ``lineage_root``; read once a run (every stage's manifest: a build's
        tens of thousands of rows), :meth:`inputs` forgets it."""
        if self._lineage_read is None:
            self._lineage_read = self._read_lineage()
        return self._lineage_read

    def _read_lineage(self) -> Lineage:
        from malmoi.registry import before

        if self.input_folder is not None:
            return Lineage.following(self.input_folder)
        if self.lineage_root is None:
            return Lineage(None)
        root = Path(self.lineage_root)
        used = [s.name for s in before(self.name) if s.name not in self.unused_stages]
        return Lineage(root, [(name, root / name) for name in used])

    # --- a person's review ---------------------------------------------------------------------

    @property
    def decisions(self) -> dict[str, Decision]:
        """The review decisions by slice id (read once a run; {} when there is no review)."""
        if self._decisions is None:
            self._decisions = {} if self.review_root is None else load_decisions(self.review_root)
        return self._decisions

    def inputs(self, items: list[Item]) -> list[Item]:
        """``items`` and the slices a person kept that no stage passed on (found in the
        build's stage folders, :func:`export.review.kept_elsewhere`); reads the decisions and
        what export recorded for each slice afresh (for :meth:`redo`)."""
        self._decisions = None
        self._lineage_read = None
        self._recorded = {r["id"]: r for r in read_records(self.out_dir / STAGE_MANIFEST)}
        self._recorded |= {r["id"]: r for r in read_records(self.out_dir / REJECTED)}
        known = {item.id for item in items}
        wanted = {d.id for d in self.decisions.values() if d.decision == "keep"} - known
        extra: list[Item] = []
        self._missing = []
        if wanted:
            extra, self._missing = kept_elsewhere(wanted, self.read_lineage().folders)
        self._restored = [item.id for item in extra]
        return items + extra

    def redo(self, item: Item, done: ProgressRow) -> bool:
        """A finished slice whose audio (or stage text) the review now needs again
        (:func:`export.review.needs_audio`)."""
        return needs_audio(self.decisions.get(item.id), self._recorded.get(item.id))

    def row_limits_reason(self, rec: dict[str, Any]) -> str | None:
        """:meth:`limits_reason` of an export row (its duration and stored scores)."""
        columns = ("duration", "snr_db", "dnsmos_ovrl", "similarity")
        return self.limits_reason({c: as_float(rec.get(c)) for c in columns})

    def apply_review(self, kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Re-judge the folder's rows by the decisions (:func:`export.review.judge`): the
        tables are rewritten when the partition or a text changes, and the WAVs of slices no
        longer kept are removed; returns the kept rows."""
        rejected_t = Table(self.out_dir, rejected_model(ExportRow))
        rejected = [dict(r.record()) for r in rejected_t.rows()]
        new_kept, new_rejected = judge(kept, rejected, self.decisions, self.row_limits_reason)
        if (new_kept, new_rejected) == (kept, rejected):
            return kept
        still = {str(r["id"]) for r in new_kept}
        out = [rec for rec in kept if str(rec["id"]) not in still]
        for rec in out:
            (self.out_dir / str(rec["path"])).unlink(missing_ok=True)
        self.repartition(new_kept, new_rejected)
        log.info(
            "export: the review re-judged the slices done before: %d left out, %d kept, "
            "%d with an edited text",
            len(out),
            len(new_kept),
            sum(r.get("text_source") == TEXT_SOURCE for r in new_kept),
        )
        return new_kept

    def review_info(self, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
        """dataset.json's ``review``: how many slices a person reviewed, kept, rejected and
        edited; of the dataset's slices, those kept past the limits (``malmoi verify`` holds
        them to none) and those kept after a filter rejected them; the slices kept with no
        audio found. None when nobody reviewed the build."""
        if not self.decisions:
            return None
        kept = {d.id for d in self.decisions.values() if d.decision == "keep"}
        ids = [str(e["id"]) for e in entries]
        by_id = {str(e["id"]): e for e in entries}
        return {
            **counts(self.decisions),
            "decisions": str(decisions_path(Path(self.review_root or "."))),
            "texts_in_dataset": sum(e.get("text_source") == TEXT_SOURCE for e in entries),
            "kept_past_limits": [
                i for i in ids if i in kept and self.row_limits_reason(by_id[i]) is not None
            ],
            "kept_past_filters": sorted(set(self._restored) & set(ids)),
            "kept_not_found": list(self._missing),
        }

    # --- per slice ----------------------------------------------------------------------------

    def limits_reason(self, values: dict[str, float | None]) -> str | None:
        """Why a slice is left out by the configured limits (None: it is in); ``values`` holds
        the duration and the stored scores by column."""
        for name, (column, is_min) in LIMITS.items():
            limit = getattr(self.params, name)
            if limit is None:
                continue
            value = values.get(column)
            if value is None:
                return f"no {column} stored (the limit {name} {limit:g} needs one)"
            if (value < limit) if is_min else (value > limit):
                unit = " s" if column == "duration" else ""
                side = "under" if is_min else "over"
                return f"{column} {value:.2f}{unit} {side} {name} {limit:g}"
        return None

    def text_of(
        self, row: dict[str, Any], origin: Origin, offset: float | None, end: float | None
    ) -> tuple[str, str]:
        """The slice's (text, text_source) by the ``text`` policy. A slice transcribed (a
        transcribe row in its lineage) takes that row's ``text`` (auto; a stage after
        transcribe that writes a ``text`` column overrides it), ``subtitle_text``
        (subtitles) or ``asr_text`` (asr); one not transcribed, the subtitles of its span (auto,
        subtitles), then in auto the text a stage before export wrote; asr gives it none."""
        mode = self.params.text
        if mode == "none":
            return "", ""
        transcribed = self.lineage.row_with(row, "asr_model") or {}
        if mode == "asr":
            text = str(transcribed.get("asr_text") or "")
            return text, "asr" if text else ""
        if transcribed and mode == "auto":  # transcribe's choice, or a later stage's text
            chosen = self.lineage.row_with(row, "text") or transcribed
            text = str(chosen.get("text") or "")
            return text, str(chosen.get("text_source") or "") if text else ""
        if transcribed:
            text = str(transcribed.get("subtitle_text") or "")
        else:
            text = self.subtitle_text(origin, offset, end)
        if text or mode == "subtitles":
            return text, "subtitles" if text else ""
        text = str(self.lineage.value(row, "text") or "")  # a stage before export wrote it
        return text, str(self.lineage.value(row, "text_source") or "") if text else ""

    def subtitle_text(self, origin: Origin, offset: float | None, end: float | None) -> str:
        """The text of the subtitles beside the slice's media over its span ('' when none, or
        when they do not parse: warned once per media file)."""
        if self.text_engine is None or origin.media is None or offset is None:
            return ""
        try:
            stop = end if end is not None else offset
            return str(self.text_engine.text(origin.media, offset, stop))
        except ItemError as exc:  # a broken subtitle file costs the text, not the audio
            if str(origin.media) not in self._bad_text:
                self._bad_text.add(str(origin.media))
                log.warning("%s; its slices are exported without text", exc)
            return ""

    def process(self, item: Item) -> Result[ExportRow]:
        r = item.row or {"id": item.id, "source": item.source}
        origin: Origin = self.lineage.origin(r)
        found = {name: self.lineage.value(r, column) for name, column in ATTRIBUTES.items()}
        offset, end = as_float(found["source_offset"]), as_float(found["source_end"])
        scores = {name: as_float(found[name]) for name in ("snr_db", "dnsmos_ovrl", "similarity")}
        try:
            wav, sr = sf.read(str(item.path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise ItemError(f"{item.shown}: cannot read the audio ({exc})") from None
        if len(wav) == 0:
            raise ItemError(f"{item.shown}: no audio (0 frames)")
        mono = wav.mean(axis=1)
        if sr != self.params.sample_rate:
            import soxr

            mono = soxr.resample(mono, sr, self.params.sample_rate, quality="VHQ")
        peak = float(np.max(np.abs(mono))) if len(mono) else 0.0
        gain = PEAK / peak if peak > PEAK else 1.0
        mono = (mono * gain).astype(np.float32)
        rel = f"{WAVS}/{item.id}.wav"
        decision = self.decisions.get(item.id)
        text, text_source = self.text_of(r, origin, offset, end)
        if decision is not None and decision.text is not None:  # a person's edit
            text, text_source = decision.text, TEXT_SOURCE
        row = self.make_row(
            item,
            id=item.id,
            path=rel,
            frames=len(mono),
            sample_rate=self.params.sample_rate,
            channels=1,
            text=text,
            text_source=text_source,
            speaker=self.speaker,
            gender=str(found["gender"] or ""),
            source_id=origin.source_id,
            source_url=origin.url,
            source_title=origin.title,
            licence=origin.licence,
            source_offset=offset,
            source_end=end,
            gain_db=round(20 * math.log10(gain), 3),
            **scores,
        )
        wanted = verdict(decision)  # a person's keep passes the limits
        why = REJECTED_IN_REVIEW if wanted == "reject" else None
        if why is None and wanted != "keep":
            why = self.limits_reason({"duration": row.duration, **scores})
        if why is not None:
            return Result(rejected=[(row, why)])
        dest = self.out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            sf.write(str(tmp), mono, self.params.sample_rate, subtype="PCM_16", format="WAV")
        return Result(kept=[row])

    # --- after the loop: splits, metadata files, card -----------------------------------------

    def settings(self) -> dict[str, Any]:
        """What the metadata depend on beyond the items' keys (with a review, the digest of
        its decisions: a changed decision is work for the next run)."""
        p = self.params
        return {
            "splits": p.splits.model_dump(),
            "seed": p.seed,
            "speaker": self.speaker,
            "dedup": p.dedup,
            "dedup_max_ber": p.dedup_max_ber,
            "dedup_min_overlap": p.dedup_min_overlap,
        } | ({"review": digest(self.decisions)} if self.decisions else {})

    def after_run(self, report: StageReport) -> None:
        table = Table(self.out_dir, ExportRow)
        kept = self.apply_review([dict(r.record()) for r in table.rows()])
        rows = deduplicate(self, kept)  # before the splits
        splits = assign_splits(
            {str(rec["source_id"]) for rec in rows},
            self.params.seed,
            self.params.splits.model_dump(),
        )
        for rec in rows:
            rec["split"] = splits[str(rec["source_id"])]
            rec["speaker"] = self.speaker
        rows.sort(key=lambda rec: str(rec["id"]))
        table.rewrite(rows)
        self.write_metadata(rows)

    def write_metadata(self, rows: list[dict[str, Any]]) -> None:
        """``manifest.jsonl``, ``metadata.csv``, ``metadata.txt``, ``dataset.json`` and the
        card, from the stage's kept rows."""
        entries = [dataset_entry(rec) for rec in rows]
        atomic_write_text(
            self.out_dir / MANIFEST,
            "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries),
        )
        buf = io.StringIO()
        columns = ["file_name", *[k for k in COLUMNS if k != "audio_filepath"]]
        writer = csv.DictWriter(buf, columns, lineterminator="\n")
        writer.writeheader()
        for e in entries:
            writer.writerow(
                {"file_name": e["audio_filepath"]}
                | {k: "" if e[k] is None else e[k] for k in columns[1:]}
            )
        atomic_write_text(self.out_dir / METADATA_CSV, buf.getvalue())
        atomic_write_text(  # the manifest's text, with no '|' inside a field (ljspeech_field)
            self.out_dir / METADATA_TXT,
            "".join(
                f"{e['id']}|{ljspeech_field(e['text'])}|{normalized_text(e['text'])}\n"
                for e in entries
            ),
        )
        info = self.dataset_info(entries)
        lineage = self.lineage if self.lineage.folders else self.read_lineage()  # not set up
        transcribed = transcribe_summary(lineage, rows, self.params.text)
        if transcribed is not None:
            info["transcribe"] = transcribed
        reviewed = self.review_info(entries)
        if reviewed is not None:
            info["review"] = reviewed
        atomic_write_text(
            self.out_dir / INFO, json.dumps(info, ensure_ascii=False, indent=1) + "\n"
        )
        write_card(self.out_dir, entries, info)
        log.info(
            "export: %d slices, %.3f h in %s (%s)",
            len(entries),
            sum(e["duration"] for e in entries) / 3600,
            self.out_dir,
            ", ".join(f"{s} {sum(e['split'] == s for e in entries)}" for s in SPLITS),
        )

    def dataset_info(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        p = self.params
        config_path = self.out_dir / "config.yaml"
        sources: dict[str, dict[str, str]] = {}
        for e in entries:
            sources.setdefault(
                e["source_id"],
                {
                    "source_id": e["source_id"],
                    "url": e["source_url"],
                    "title": e["source_title"],
                    "licence": e["licence"],
                    "split": e["split"],
                },
            )
        return {
            "name": self.dataset_name,
            "sample_rate": p.sample_rate,
            "limits": {name: getattr(p, name) for name in LIMITS},
            "splits": p.splits.model_dump(),
            "seed": p.seed,
            "settings": self.settings(),
            "counts": {
                "slices": len(entries),
                "hours": sum(e["duration"] for e in entries) / 3600,
                "with_text": sum(bool(e["text"]) for e in entries),
                **{s: sum(e["split"] == s for e in entries) for s in SPLITS},
            },
            "provenance": {
                "config_yaml": config_path.read_text(encoding="utf-8")
                if config_path.exists()
                else "",
                "sources": list(sources.values()),
                "packages": package_versions(),
                **(self.provenance() if self.provenance is not None else {}),
            },
        }


def profile_in(folder: Path) -> str:
    """The speaker profile the speaker filter in ``folder``'s lineage used or saved ("")."""
    from malmoi.folders import chain, config_of

    for stage, where in chain(folder):
        if stage == "speaker_filter":
            return str(config_of(where, stage).get("profile") or "")
    return ""


def dataset_entry(rec: dict[str, Any]) -> dict[str, Any]:
    """A manifest.jsonl object from a stage row (NeMo's three keys first)."""

    def num(key: str) -> float | None:
        value = as_float(rec.get(key))
        return None if value is None or math.isnan(value) else value

    out: dict[str, Any] = {
        "audio_filepath": rec["path"],
        "duration": float(rec["duration"]),
        "text": str(rec.get("text") or ""),
    }
    for key in COLUMNS[3:]:
        if key in NULLABLE_NUMBER_COLUMNS:
            out[key] = num(key)
        else:
            out[key] = str(rec.get(key) or "")
    return out
