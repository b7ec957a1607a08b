import unicodedata

from malmoi.ids import child_id, root_id, slugify


def test_root_id_is_deterministic_and_keeps_hangul() -> None:
    a = root_id("말모이 데모", "/data/말모이 데모.mp4")
    assert a == root_id("말모이 데모", "/data/말모이 데모.mp4")
    assert a.startswith("말모이_데모-")


def test_nfd_and_nfc_names_give_the_same_id() -> None:
    nfc = "한국어 방송"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert root_id(nfd, f"/x/{nfd}.mp3") == root_id(nfc, f"/x/{nfc}.mp3")


def test_same_name_in_two_folders_gives_two_ids() -> None:
    assert root_id("intro", "/a/intro.mp4") != root_id("intro", "/b/intro.mp4")


def test_slug_is_filesystem_safe() -> None:
    slug = slugify('a/b\\c:d*e?f"g<h>i|j  k\x00l')
    assert not set('/\\:*?"<>| \x00') & set(slug)
    assert slugify("...") == "item"
    assert len(slugify("가" * 200).encode()) <= 80


def test_child_id_extends_the_parent() -> None:
    assert child_id("ep1-abc", "vocals") == "ep1-abc.vocals"
