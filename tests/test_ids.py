import unicodedata
from pathlib import Path

from malmoi.ids import root_id


def test_root_id_is_deterministic_and_keeps_hangul() -> None:
    a = root_id("말모이 데모", "/data/말모이 데모.mp4")
    assert a == root_id("말모이 데모", "/data/말모이 데모.mp4")
    assert a.startswith("말모이_데모-")


def test_nfd_and_nfc_paths_are_two_files_with_one_readable_slug() -> None:
    """Linux keeps both names in one folder: two files, two ids (the path is hashed as it is
    on disk); the readable part is NFC either way."""
    nfc = "한국어 방송"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    a, b = root_id(nfd, f"/x/{nfd}.mp3"), root_id(nfc, f"/x/{nfc}.mp3")
    assert a != b
    assert a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0] == "한국어_방송"


def test_a_downloader_layout_of_a_million_files_gives_a_million_ids() -> None:
    """`<n>/audio.m4a`, a common downloader layout: with 32-bit hashes 91,255 such files
    already collided (11197/audio.m4a and 91255/audio.m4a, one silently dropped); at a million
    a 32-bit hash gives about a hundred collisions, 64 bits none."""
    from ingest.local import file_item

    ids = {root_id("audio", f"/crawl/{n}/audio.m4a") for n in range(1_000_000)}
    assert len(ids) == 1_000_000
    pair = [file_item(Path(f"/crawl/{n}/audio.m4a")).id for n in (11197, 91255)]
    assert pair[0] != pair[1]
