"""How well export's duplicate check (:mod:`export.dedup`) finds the same speech re-encoded,
re-uploaded or rebroadcast, and how often it calls distinct speech a duplicate.

Clips: the LibriSpeech utterances of ``../shared/data`` (6 speakers × 10 utterances, and the
120 speakers' single utterances: 10 of the same speaker in every test speaker's set) and 20
Korean sentences from espeak-ng (one voice, ``ko``: all "the same speaker"). Every clip is an
original source; each variant of it is a later source:

- ``mp3 64k``, ``m4a/aac 96k``, ``opus 32k``: re-encodings;
- ``intro + mp3``: 3 s of another clip's speech before it (a rebroadcast), mp3 128k; its slice
  is the clip's part (3 s on);
- ``noise 15 dB + mp3``: white noise at 15 dB SNR, then mp3 64k (a re-recorded copy);
- ``cut ±0.2 s, opus``: the copy's slice starts 0.2 s later and ends 0.2 s later (another
  segmentation), Opus 32k.

Whole clips (3–35 s) are fingerprinted as sources (``fpcalc`` on the file, the slice at its
time in it). ``short slices`` repeats the re-encodings on 1.5-s crops fingerprinted on their own
(padded with silence, the check's fallback for plain-file exports and short sources).

Detection rate: the copies named ``duplicate of`` their own original. False positives: the
originals (distinct clips, same-speaker ones included) named duplicates of another clip, over
the number of originals; and the copies named duplicates of a *wrong* clip. Time: fingerprints
and matching per hour of audio checked.

Run: ``python -m eval.dedup`` (about 2 minutes; ``--clips N`` for fewer)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from export.dedup import (
    MIN_ITEMS,
    PAD,
    Settings,
    Unit,
    find_duplicates,
    fpcalc,
    padded_fingerprint,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KOREAN = [
    "오늘은 날씨가 맑고 바람이 조금 불겠습니다.",
    "서울의 낮 기온은 이십오 도까지 오르겠습니다.",
    "다음 소식입니다. 시청 앞 광장에서 축제가 열립니다.",
    "이번 주말에는 전국에 비가 내릴 것으로 보입니다.",
    "청취자 여러분, 좋은 아침입니다.",
    "지금부터 교통 정보를 전해 드리겠습니다.",
    "경부 고속도로 상행선이 많이 막히고 있습니다.",
    "오후에는 구름이 많아지겠습니다.",
    "새로 나온 책을 소개해 드리겠습니다.",
    "이 노래는 천구백팔십 년대에 큰 사랑을 받았습니다.",
    "내일 아침은 오늘보다 조금 쌀쌀하겠습니다.",
    "주식 시장은 소폭 상승으로 마감했습니다.",
    "한강 공원에는 많은 시민들이 모였습니다.",
    "잠시 광고 듣고 오겠습니다.",
    "오늘 방송은 여기까지입니다. 고맙습니다.",
    "어린이 여러분, 길을 건널 때는 좌우를 잘 살피세요.",
    "도서관은 월요일마다 문을 닫습니다.",
    "이번 경기는 삼 대 일로 끝났습니다.",
    "봄이 되면 산에 진달래가 핍니다.",
    "전화 연결을 기다리고 있습니다.",
]
VARIANTS: dict[str, tuple[list[str], float, float]] = {
    # name: (ffmpeg codec arguments, seconds of intro, slice shift in the copy)
    "mp3 64k": (["-c:a", "libmp3lame", "-b:a", "64k"], 0.0, 0.0),
    "m4a/aac 96k": (["-c:a", "aac", "-b:a", "96k"], 0.0, 0.0),
    "opus 32k": (["-c:a", "libopus", "-b:a", "32k"], 0.0, 0.0),
    "intro 3 s + mp3": (["-c:a", "libmp3lame", "-b:a", "128k"], 3.0, 0.0),
    "noise 15 dB + mp3": (["-c:a", "libmp3lame", "-b:a", "64k"], 0.0, 0.0),
    "cut +0.2 s, opus": (["-c:a", "libopus", "-b:a", "32k"], 0.0, 0.2),
}
EXT = {"libmp3lame": ".mp3", "aac": ".m4a", "libopus": ".opus"}
SR = 16000
SHORT = 1.5  # seconds of a short slice
LONG = 5.0  # clips at least this long have a source fingerprint (2.7 s + 16 values)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def clips(work: Path, limit: int | None) -> list[Path]:
    """The original clips as 16-kHz mono WAVs (LibriSpeech, then espeak-ng Korean)."""
    out = []
    libri = sorted((SHARED / "librispeech" / "utterances").rglob("*.flac")) + sorted(
        (SHARED / "librispeech" / "speakers").glob("*.flac")
    )
    for src in libri:
        audio, sr = sf.read(str(src), dtype="float32")
        dest = work / f"{src.stem}.wav"
        sf.write(str(dest), audio, sr, subtype="PCM_16")
        out.append(dest)
    for i, text in enumerate(KOREAN):
        raw = work / f"ko-{i:02d}.raw.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True)
        dest = work / f"ko-{i:02d}.wav"
        ffmpeg("-i", str(raw), "-ac", "1", "-ar", str(SR), str(dest))
        raw.unlink()
        out.append(dest)
    if limit is not None:  # an even spread of both kinds
        step = max(1, len(out) // limit)
        out = out[::step][:limit]
    return out


def variant(clip: Path, name: str, other: Path, dest_dir: Path) -> Path:
    """The copy of ``clip`` for variant ``name`` (``other`` gives the intro)."""
    codec, intro, _ = VARIANTS[name]
    dest = dest_dir / f"{clip.stem}{EXT[codec[1]]}"
    src = clip
    if intro:
        lead, sr = sf.read(str(other), dtype="float32")
        audio, _ = sf.read(str(clip), dtype="float32")
        src = dest_dir / f"{clip.stem}.intro.wav"
        sf.write(str(src), np.concatenate([lead[: int(intro * sr)], audio]), sr)
    elif name.startswith("noise"):
        audio, sr = sf.read(str(clip), dtype="float32")
        noise = np.random.default_rng(len(clip.stem)).standard_normal(len(audio))
        gain = np.sqrt(np.mean(audio**2) / np.mean(noise**2) / 10 ** (15 / 10))
        src = dest_dir / f"{clip.stem}.noisy.wav"
        sf.write(str(src), (audio + gain * noise).astype(np.float32), sr)
    ffmpeg("-i", str(src), *codec, str(dest))
    return dest


def source_fingerprint(
    path: Path, start: float, stop: float, tmp: Path
) -> tuple[np.ndarray, float, float]:
    """As export does: the whole file's fingerprint and the slice at its time in it; a file
    too short for one (under MIN_ITEMS values) gives the slice's own, padded, at PAD s."""
    fp = fpcalc(path)
    if len(fp) >= MIN_ITEMS:
        return fp, start, stop
    wav = tmp / f"{path.stem}.slice.wav"
    audio, sr = sf.read(str(path), dtype="float32") if path.suffix == ".wav" else decode(path)
    sf.write(str(wav), audio[int(start * sr) : int(stop * sr)], sr, subtype="PCM_16")
    return padded_fingerprint(wav, tmp), PAD, PAD + (stop - start)


def decode(path: Path) -> tuple[np.ndarray, int]:
    wav = path.with_suffix(".decoded.wav")
    ffmpeg("-i", str(path), "-ac", "1", "-ar", str(SR), str(wav))
    return sf.read(str(wav), dtype="float32")[0], SR


def duration(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def decoded_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip())


def run_case(
    originals: list[tuple[str, np.ndarray, float, float]],
    copies: list[tuple[str, np.ndarray, float, float]],
    settings: Settings,
) -> dict[str, str]:
    """``find_duplicates`` over sources of one slice each: (id, fingerprint, start, stop);
    originals first in keep order, then the copies."""
    units = [
        Unit(f"u{i}", i, fp, [(cid, start, stop)])
        for i, (cid, fp, start, stop) in enumerate([*originals, *copies])
    ]
    rows = [
        {"id": u.slices[0][0], "source_id": f"{u.rank:06d}", "source_offset": u.slices[0][1]}
        for u in units
    ]
    by_id = {u.slices[0][0]: u for u in units}
    return find_duplicates(
        rows,
        order=lambda r: (r["source_id"],),
        source_hash=lambda r: "",
        slice_hash=lambda r: "",
        units_of=lambda rs: [by_id[r["id"]] for r in rs],
        settings=settings,
    )


def score(
    found: dict[str, str], originals: list[str], copies: dict[str, str]
) -> tuple[float, float, int]:
    """(detection rate, false-positive rate among originals, copies named after a wrong clip)."""
    hits = sum(found.get(c) == f"duplicate of {o}" for c, o in copies.items())
    return (hits / max(len(copies), 1), *score_false(found, originals, copies))


def score_false(
    found: dict[str, str], originals: list[str], copies: dict[str, str]
) -> tuple[float, int]:
    """(false-positive rate among originals, copies named after a wrong clip)."""
    wrong = sum(c in found and found[c] != f"duplicate of {o}" for c, o in copies.items())
    false = sum(o in found for o in originals)
    return false / max(len(originals), 1), wrong


def detected(found: dict[str, str], copies: dict[str, str]) -> float:
    """Share of ``copies`` named duplicates of their own original."""
    hits = sum(found.get(c) == f"duplicate of {o}" for c, o in copies.items())
    return hits / max(len(copies), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=None, help="use N clips (default: all)")
    parser.add_argument("--max-ber", type=float, default=0.2)
    parser.add_argument("--min-overlap", type=float, default=0.5)
    args = parser.parse_args()
    settings = Settings(args.max_ber, args.min_overlap)
    work = Path(tempfile.mkdtemp(prefix="malmoi-dedup-eval-"))
    try:
        originals = clips(work, args.clips)
        lengths = {p.stem: duration(p) for p in originals}
        seconds = {"fp": 0.0, "match": 0.0, "audio": 0.0}

        def timed_fp(make: Callable[[], Any], audio_seconds: float) -> Any:
            t = time.perf_counter()
            fp = make()
            seconds["fp"] += time.perf_counter() - t
            seconds["audio"] += audio_seconds
            return fp

        base = []
        for p in originals:
            fp, start, stop = timed_fp(
                lambda p=p: source_fingerprint(p, 0.0, duration(p), work), duration(p)
            )
            base.append((p.stem, fp, start, stop))
        rows = []
        t = time.perf_counter()
        found = run_case(base, [], settings)
        seconds["match"] += time.perf_counter() - t
        _, fp_rate, _ = score(found, [b[0] for b in base], {})
        distinct_fp = fp_rate
        for name, (_, intro, shift) in VARIANTS.items():
            folder = work / name.replace(" ", "_").replace("/", "_")
            folder.mkdir()
            copies = []
            for i, p in enumerate(originals):
                other = originals[(i + 7) % len(originals)]
                copy = variant(p, name, other, folder)
                d = duration(p)
                fp, start, stop = timed_fp(
                    lambda c=copy, s=intro + shift, e=intro + d + shift, f=folder: (
                        source_fingerprint(c, s, e, f)
                    ),
                    decoded_duration(copy),
                )
                copies.append((f"copy:{p.stem}", fp, start, stop))
            t = time.perf_counter()
            found = run_case(base, copies, settings)
            seconds["match"] += time.perf_counter() - t
            pairs = {c[0]: c[0][5:] for c in copies}
            det, fpr, wrong = score(found, [b[0] for b in base], pairs)
            long_ = {c: o for c, o in pairs.items() if lengths[o] >= LONG}
            rows.append((name, len(copies), det, detected(found, long_), fpr, wrong))
        # short slices: 1.5-s crops, fingerprinted on their own (padded)
        crops = work / "crops"
        crops.mkdir()
        short_base, short_copies = [], []
        for p in originals:
            audio, sr = sf.read(str(p), dtype="float32")
            start = int(min(2.0, max(0.0, len(audio) / sr - SHORT)) * sr)
            crop = crops / f"{p.stem}.wav"
            sf.write(str(crop), audio[start : start + int(SHORT * sr)], sr, subtype="PCM_16")
            enc = crops / f"{p.stem}.opus"
            ffmpeg("-i", str(crop), "-c:a", "libopus", "-b:a", "32k", str(enc))
            dec = crops / f"{p.stem}.dec.wav"
            ffmpeg("-i", str(enc), "-ar", str(sr), str(dec))
            span = (PAD, PAD + SHORT)
            short_base.append(
                (p.stem, timed_fp(lambda c=crop: padded_fingerprint(c, crops), SHORT), *span)
            )
            short_copies.append(
                (
                    f"copy:{p.stem}",
                    timed_fp(lambda c=dec: padded_fingerprint(c, crops), SHORT),
                    *span,
                )
            )
        t = time.perf_counter()
        found = run_case(short_base, short_copies, settings)
        seconds["match"] += time.perf_counter() - t
        det, fpr, wrong = score(
            found, [b[0] for b in short_base], {c[0]: c[0][5:] for c in short_copies}
        )
        rows.append(
            ("short slices 1.5 s, opus 32k (padded)", len(short_copies), det, None, fpr, wrong)
        )
        hours = seconds["audio"] / 3600
        print(
            f"{len(originals)} distinct clips ({sum(duration(p) for p in originals) / 60:.1f} "
            f"min); dedup_max_ber {settings.max_ber}, dedup_min_overlap {settings.min_overlap}\n"
        )
        n_long = sum(v >= LONG for v in lengths.values())
        print(
            f"| copies | n | detected | detected, clips ≥ {LONG:g} s ({n_long}) "
            "| false positives among distinct clips | copies matched to a wrong clip |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(f"| none (distinct clips only) | {len(originals)} | – | – | {distinct_fp:.1%} | – |")
        for name, n, det, det_long, fpr, wrong in rows:
            shown = "–" if det_long is None else f"{det_long:.1%}"
            print(f"| {name} | {n} | {det:.1%} | {shown} | {fpr:.1%} | {wrong} |")
        print(
            f"\ntime: fingerprints {seconds['fp'] / hours:.1f} s per hour of audio "
            f"({hours:.2f} h fingerprinted), matching {seconds['match']:.2f} s in all"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
