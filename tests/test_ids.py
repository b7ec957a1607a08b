import unicodedata
from pathlib import Path

from malmoi.ids import child_id, root_id, slugify


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


def test_a_downloader_layout_of_91255_files_gives_91255_ids() -> None:
    """`<n>/audio.m4a`, a common downloader layout: 32-bit hashes collided at 91,255 files
    (11197/audio.m4a and 91255/audio.m4a); 64 bits keep every id distinct."""
    from crawl.local import file_item

    ids = {file_item(Path(f"/crawl/{n}/audio.m4a")).id for n in range(1, 91256)}
    assert len(ids) == 91255
    assert (
        file_item(Path("/crawl/11197/audio.m4a")).id != file_item(Path("/crawl/91255/audio.m4a")).id
    )


def test_same_name_in_two_folders_gives_two_ids() -> None:
    assert root_id("intro", "/a/intro.mp4") != root_id("intro", "/b/intro.mp4")


def test_slug_is_filesystem_safe() -> None:
    slug = slugify('a/b\\c:d*e?f"g<h>i|j  k\x00l')
    assert not set('/\\:*?"<>| \x00') & set(slug)
    assert slugify("...") == "item"
    assert len(slugify("가" * 200).encode()) <= 80


def test_child_id_extends_the_parent() -> None:
    assert child_id("ep1-abc", "vocals") == "ep1-abc.vocals"
