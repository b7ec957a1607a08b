"""The dataset folder's contract, shared by the stage that writes it, the card and
``malmoi verify``: file names, splits, the columns of ``manifest.jsonl`` in order (with their
kinds), the limits with the column each bounds, and the fields of ``metadata.txt``."""

from __future__ import annotations

import re

from transcribe.normalize import spoken

MANIFEST = "manifest.jsonl"
METADATA_CSV = "metadata.csv"
METADATA_TXT = "metadata.txt"
INFO = "dataset.json"
WAVS = "wavs"
SPLITS = ("train", "validation", "test")

# manifest.jsonl's keys in order (NeMo's three first); metadata.csv: file_name, then the rest
COLUMNS = (
    "audio_filepath",
    "duration",
    "text",
    "id",
    "speaker",
    "gender",
    "source_id",
    "source_url",
    "source_title",
    "licence",
    "source_offset",
    "source_end",
    "snr_db",
    "dnsmos_ovrl",
    "similarity",
    "split",
    "text_source",
)
NUMBER_COLUMNS = ("duration",)
# a number or null (a slice exported from plain files has no place in a source)
NULLABLE_NUMBER_COLUMNS = ("source_offset", "source_end", "snr_db", "dnsmos_ovrl", "similarity")
STR_COLUMNS = tuple(c for c in COLUMNS if c not in NUMBER_COLUMNS + NULLABLE_NUMBER_COLUMNS)

# limit in the export config and dataset.json -> (the column it bounds, True for a minimum)
LIMITS = {
    "min_duration": ("duration", True),
    "max_duration": ("duration", False),
    "min_snr_db": ("snr_db", True),
    "min_dnsmos_ovrl": ("dnsmos_ovrl", True),
    "min_similarity": ("similarity", True),
}

# metadata.txt (LJSpeech) is split on '|' by every loader, one slice per line: a run of '|'
# and line breaks inside a text (with the spaces around it) becomes one space there. A space,
# not '/' or another sign: a '|' in a subtitle is a visual divider nobody reads aloud, and a
# TTS front end may read '/' ("slash") or choke on a rare sign; a space is silent everywhere.
_LJSPEECH_UNSAFE = re.compile(r"\s*[|\r\n][\s|]*")


def ljspeech_field(text: str) -> str:
    """``text`` as a field of metadata.txt: no '|' and no line break in it (see above). The
    exporter writes it and ``malmoi verify`` compares with it."""
    return _LJSPEECH_UNSAFE.sub(" ", text)


def normalized_text(text: str) -> str:
    """metadata.txt's third field: ``text`` in the Korean spoken form
    (:func:`transcribe.normalize.spoken`: ``3개 주세요`` → ``세 개 주세요``), as
    :func:`ljspeech_field` writes it. The exporter writes it and ``malmoi verify`` compares with
    it."""
    return ljspeech_field(spoken(text))
