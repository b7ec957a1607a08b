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


def test_slug_is_at_most_80_bytes_with_emoji_and_separators_replaced() -> None:
    """README (crawl, Safety): at most 80 bytes of slug, Hangul kept; `/`, `\\`, emoji and
    control characters replaced — whatever a 300-character title holds."""
    from malmoi.ids import MAX_SLUG_BYTES, slugify

    title = ("방송/제목\\2024 🎙️ 한국어 👨‍👩‍👧 가족 🇰🇷 1️⃣ 특집\t\x07편 " * 12)[:300]
    slug = slugify(title)
    assert MAX_SLUG_BYTES == 80 and 70 <= len(slug.encode("utf-8")) <= 80, slug
    assert slug.startswith("방송_제목_2024_한국어_가족_1_특집_편_방송"), slug
    for ch in slug:  # only letters, digits and the joining "_" survive here
        assert ch.isalnum() or ch == "_", (ch, hex(ord(ch)), slug)
    for emoji in ("😀", "🎙️", "👍🏽", "👨‍👩‍👧", "🇰🇷", "#️⃣", "✨"):
        assert slugify(f"가{emoji}나") == "가_나", emoji
    assert slugify("😀🎙️") == "item"  # nothing readable left
    # a cut never splits a Hangul syllable (3 bytes each)
    assert slugify("가" * 100) == "가" * 26


def test_the_readme_shows_ids_with_their_16_hex_digits() -> None:
    """Every `<slug>-<hash>` id the README shows has the hash's HASH_HEX digits."""
    import re

    from malmoi.ids import HASH_HEX
    from tests.conftest import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    hashes = re.findall(r"\w-([0-9a-f]{6,})(?![0-9a-f])", text)
    assert hashes, "the README shows no id"
    assert [h for h in hashes if len(h) != HASH_HEX] == []
