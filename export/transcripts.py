"""What the transcribe stage did, for ``dataset.json`` and the card: read from the transcribe
folder in a dataset's lineage (its ``manifest.csv``, ``rejected.csv`` and ``rules.json``, see
:mod:`transcribe.stage`) and the transcribe rows of the exported slices.

:func:`transcribe_summary` gives, as plain JSON:

- ``text``: the export's text policy (``export.text``);
- ``max_cer``: the CER up to which a subtitle agrees with the ASR text (``rules.json``
  settings; None when not recorded);
- ``cer``: the CER of the subtitle against the ASR text of each exported slice that had
  subtitles (in the slices' order);
- ``languages``: the languages detected, slices per language over every slice transcribe
  judged (kept and rejected), most frequent first;
- ``removed``: per rule of ``rules.json``'s ``rejected_by_rule``, its slices and their seconds
  (the durations in ``rejected.csv`` of the rows it names).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from malmoi.audio import as_float
from malmoi.lineage import Lineage
from malmoi.logs import get_logger
from malmoi.manifest import MANIFEST, REJECTED, read_records

log = get_logger(__name__)

STAGE = "transcribe"
RULES = "rules.json"
NO_LANGUAGE = "(none)"
EXAMPLES = 5  # exported slices shown with what ASR heard


def transcribe_folder(lineage: Lineage) -> Path | None:
    """The transcribe stage folder of ``lineage`` that holds rows (None: transcribe did not
    run)."""
    for stage, folder in reversed(lineage.folders):
        if stage == STAGE and read_records(Path(folder) / MANIFEST):
            return Path(folder)
    return None


def read_rules(folder: Path) -> dict[str, Any]:
    """``rules.json`` of a transcribe folder ({} when absent or unreadable)."""
    path = folder / RULES
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: not read (%s); the card leaves the rules out", path, exc)
        return {}
    return got if isinstance(got, dict) else {}


def transcribe_summary(
    lineage: Lineage, rows: Sequence[dict[str, Any]], text: str
) -> dict[str, Any] | None:
    """What transcribe did to the exported ``rows`` (export rows: ``id``, ``parent_id``) and
    the slices it judged (see the module's docstring); None when no transcribe folder with rows
    is in ``lineage``. ``text``: the export's text policy."""
    from transcribe.stage import rule_of

    folder = transcribe_folder(lineage)
    if folder is None:
        return None
    rules = read_rules(folder)
    judged = read_records(folder / MANIFEST) + (rejected := read_records(folder / REJECTED))
    cers: list[float] = []
    examples: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: str(r["id"])):
        heard = lineage.row_with(row, "asr_model") or {}
        value = as_float(heard.get("cer"))
        if str(heard.get("subtitle_text") or "").strip() and value is not None:
            cers.append(value)
        if heard and len(examples) < EXAMPLES:
            examples.append(
                {
                    "id": str(row["id"]),
                    "subtitle": str(heard.get("subtitle_text") or ""),
                    "asr": str(heard.get("asr_text") or ""),
                    "cer": value,
                    "language": str(heard.get("language") or ""),
                }
            )
    languages = Counter(str(r.get("language") or "") or NO_LANGUAGE for r in judged)
    seconds: Counter[str] = Counter()
    for r in rejected:
        seconds[rule_of(str(r.get("reason") or ""))] += as_float(r.get("duration")) or 0.0
    by_rule = rules.get("rejected_by_rule") or {}
    return {
        "text": text,
        "max_cer": as_float((rules.get("settings") or {}).get("max_cer")),
        "cer": cers,
        "examples": examples,
        "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        "removed": {
            rule: {"slices": int(n), "seconds": seconds[rule]}
            for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
        },
    }
