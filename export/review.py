"""Export honours a person's review (issue 23): the decisions the review page writes to
``<output_dir>/review/decisions.jsonl`` (:mod:`review.decisions`), applied without recomputing
any earlier stage.

- a slice **rejected** in review goes to export's ``rejected.csv`` as ``rejected in review``;
  its WAV is not written (or is removed);
- a slice **kept** in review is exported whatever export's limits say (duration, SNR, DNSMOS,
  similarity; ``dataset.json``'s ``review.kept_past_limits`` names those it passes, which
  ``malmoi verify`` then does not hold to the limits). One no stage passed on (a filter
  rejected it) is found in the build's stage folders (:func:`kept_elsewhere`): the latest stage
  whose ``manifest.csv`` or ``rejected.csv`` has its row and whose folder still holds its
  audio. The duplicate check still applies to it (a person keeps a slice, not a second copy);
- an **edited** text replaces the slice's text, with ``text_source`` ``review``.

The decisions are not part of the items' keys: their :func:`digest` is one of export's
settings, so a changed decision makes the next run re-judge the rows it holds (:func:`judge`)
and rewrite the metadata; only a slice whose audio the new decision needs again
(:func:`needs_audio`: a rejection undone, a keep past the limits, an edit undone) is processed
again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from export.dedup import REASON as DUPLICATE
from malmoi.logs import get_logger
from malmoi.manifest import MANIFEST, REJECTED, read_records
from malmoi.stage import Item
from review.decisions import Decision

log = get_logger(__name__)

REJECTED_IN_REVIEW = "rejected in review"
TEXT_SOURCE = "review"
COUNTS = ("reviewed", "kept", "rejected", "edited")


def digest(decisions: dict[str, Decision]) -> str:
    """A short hash of the slices' review states (not of the file: a line that repeats a state
    with another time changes nothing)."""
    state = sorted((d.id, d.decision, d.text) for d in decisions.values())
    return hashlib.sha256(json.dumps(state, ensure_ascii=False).encode()).hexdigest()[:16]


def counts(decisions: dict[str, Decision]) -> dict[str, int]:
    """How many slices a person reviewed, kept, rejected and edited the text of."""
    values = list(decisions.values())
    return {
        "reviewed": len(values),
        "kept": sum(d.decision == "keep" for d in values),
        "rejected": sum(d.decision == "reject" for d in values),
        "edited": sum(d.text is not None for d in values),
    }


def verdict(decision: Decision | None) -> str:
    """The decision's verdict: keep, reject or "" (not decided)."""
    return decision.decision if decision is not None else ""


def with_text(row: dict[str, Any], decision: Decision | None) -> dict[str, Any]:
    """``row`` with the edited text, ``text_source`` review (as it is when not edited)."""
    if decision is None or decision.text is None:
        return row
    return {**row, "text": decision.text, "text_source": TEXT_SOURCE}


def needs_audio(decision: Decision | None, recorded: dict[str, Any] | None) -> bool:
    """Whether a slice export finished must be processed again for ``decision``: ``recorded``
    is export's row of it (with ``reason`` when rejected; None when it has none). A rejection
    in review undone and a keep of a slice the limits rejected need its WAV; an edit undone
    needs the text the stages gave it. Anything else :func:`judge` mends from the rows."""
    if recorded is None:
        return False
    reason = str(recorded.get("reason") or "")
    wanted = verdict(decision)
    if reason == REJECTED_IN_REVIEW and wanted != "reject":
        return True
    if wanted == "keep" and reason and not reason.startswith(DUPLICATE):
        return True
    edited = decision is not None and decision.text is not None
    return recorded.get("text_source") == TEXT_SOURCE and not edited


def judge(
    kept: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    decisions: dict[str, Decision],
    limits_reason: Callable[[dict[str, Any]], str | None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Export's rows (kept, rejected with ``reason``) partitioned again by ``decisions``, with
    the edited texts: a kept slice rejected in review, or no longer kept by a person and
    outside the limits (``limits_reason`` of its row), is rejected; a rejected one rejected in
    review gets that reason. A kept-again slice is not moved back here: its audio is needed
    (:func:`needs_audio` made the loop process it)."""
    new_kept: list[dict[str, Any]] = []
    new_rejected: list[dict[str, Any]] = []
    for rec in kept:
        decision = decisions.get(str(rec["id"]))
        rec = with_text(rec, decision)
        wanted = verdict(decision)
        why = REJECTED_IN_REVIEW if wanted == "reject" else None
        if why is None and wanted != "keep":
            why = limits_reason(rec)
        if why is None:
            new_kept.append(rec)
        else:
            new_rejected.append({**rec, "reason": why})
    for rec in rejected:
        decision = decisions.get(str(rec["id"]))
        rec = with_text(rec, decision)
        if verdict(decision) == "reject":
            rec = {**rec, "reason": REJECTED_IN_REVIEW}
        new_rejected.append(rec)
    return new_kept, new_rejected


def kept_elsewhere(
    wanted: Iterable[str], folders: list[tuple[str, Path]]
) -> tuple[list[Item], list[str]]:
    """Items for the slices ``wanted`` (kept in review, not among export's inputs) from the
    stage folders ``folders`` (in pipeline order): for each, the row of the latest stage whose
    ``manifest.csv`` or ``rejected.csv`` lists it with its audio still in the folder (a slice
    a filter rejected: the filter's rejected row, the audio it passed on). Also the ids found
    nowhere with audio (a candidate part the speaker filter never cut, a slice the segment
    stage dropped unwritten), in order."""
    todo = sorted(set(wanted))
    wanted_ids = set(todo)
    found: dict[str, Item] = {}
    for stage, folder in reversed(folders):
        if len(found) == len(todo):
            break
        if stage in ("crawl", "export"):
            continue
        for table in (MANIFEST, REJECTED):
            for rec in read_records(Path(folder) / table):
                rid = str(rec.get("id") or "")
                if rid not in wanted_ids or rid in found or not rec.get("path"):
                    continue
                path = (Path(folder) / str(rec["path"])).absolute()
                if not path.is_file():
                    continue
                row = {k: v for k, v in rec.items() if k != "reason"}
                found[rid] = Item(
                    id=rid,
                    path=path,
                    source=str(rec.get("source") or ""),
                    fingerprint=str(rec.get("key") or ""),
                    row=row,
                    folder=Path(folder).absolute(),
                )
                log.debug("review: %s kept, read from the %s stage (%s)", rid, stage, path)
    missing = [rid for rid in todo if rid not in found]
    if missing:
        log.warning(
            "review: %d slice(s) kept in review have no audio in the build's stage folders "
            "and are not exported: %s",
            len(missing),
            ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""),
        )
    return [found[rid] for rid in todo if rid in found], missing
