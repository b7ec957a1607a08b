"""How the review page's server holds up with many slices (issue 23: "responsive with 10,000").

    .venv/bin/python bench/review_speed.py                # 10,000 slices
    .venv/bin/python bench/review_speed.py --slices 50000

Writes a build's tables by hand into a temporary folder (segment → speaker filter, a third of the
slices rejected below the cut, denoise, transcribe with texts, export), then times, in one
process: gathering the slices (``review.slices.Build``), and through the real FastAPI app
(``review.server.create_app``, requests over Starlette's test client) the summary, the first
page in pipeline order, the first page by doubt, a text search, a stage + reason filter, a page
deep in the list, and a decision (which appends to ``decisions.jsonl`` and re-reads it). Each
request is timed as the median of 5. Prints a markdown table."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORDS = ["오늘은", "날씨가", "맑아서", "공원에", "산책을", "갔습니다", "라디오", "방송", "천",
         "편에서"]  # fmt: skip


def write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def make_build(out: Path, n: int) -> None:
    """A build's tables of ``n`` slices of one track (no audio: the server reads tables)."""
    seg, kept, rejected, den, tra, exp = [], [], [], [], [], []
    below = "self_similarity {:.3f} below threshold 0.850 (auto: self-enrollment)"
    for k in range(n):
        sid = f"ep-0001.vocals.{k + 1:05d}"
        start = k * 4.0
        base = {"id": sid, "parent_id": "ep-0001.vocals", "path": f"ep/{sid}.wav",
                "duration": 3.5, "source": "ep.mp3", "start": start,
                "stop": start + 3.5}  # fmt: skip
        seg.append(base)
        sim = 0.5 + 0.5 * ((k * 7919) % 1000) / 1000
        row = {**base, "self_similarity": round(sim, 4), "threshold": 0.85, "part_of": ""}
        if sim < 0.85:
            rejected.append({**row, "reason": below.format(sim)})
            continue
        kept.append(row)
        did = f"{sid}.denoised"
        d = {**base, "id": did, "parent_id": sid, "path": f"ep/{did}.wav"}
        den.append({**d, "dnsmos_ovrl": 3.1, "snr_db": 25.0})
        text = " ".join(WORDS[(k + j) % len(WORDS)] for j in range(5))
        tra.append({**d, "text": text, "text_source": "asr", "language": "ko", "cer": 0.1})
        exp.append({**d, "path": f"wavs/{did}.wav", "text": text, "text_source": "asr"})
    write_table(out / "segment/manifest.csv", seg)
    write_table(out / "speaker_filter/manifest.csv", kept)
    write_table(out / "speaker_filter/rejected.csv", rejected)
    (out / "speaker_filter/threshold.json").write_text('{"column": "self_similarity"}\n')
    write_table(out / "denoise/manifest.csv", den)
    write_table(out / "transcribe/manifest.csv", tra)
    write_table(out / "export/manifest.csv", exp)


def timed(call: Callable[[], Any], repeat: int = 5) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", type=int, default=10_000)
    args = ap.parse_args(argv)
    from fastapi.testclient import TestClient

    from review.server import create_app
    from review.slices import Build

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        make_build(out, args.slices)
        t = time.perf_counter()
        entries = len(Build(out).entries)
        gather = time.perf_counter() - t
        client = TestClient(create_app(out), base_url="http://127.0.0.1")

        def get(url: str) -> Callable[[], Any]:
            def call() -> Any:
                r = client.get(url)
                r.raise_for_status()
                return r.json()

            return call

        first = get("/api/slices?limit=100")()["items"][0]["id"]
        steps = [
            ("summary (`/api/summary`)", get("/api/summary")),
            ("first page, pipeline order (100)", get("/api/slices?limit=100")),
            ("first page by doubt", get("/api/slices?limit=100&sort=doubt")),
            ("text search `q=산책`", get("/api/slices?limit=100&q=%EC%82%B0%EC%B1%85")),
            ("stage + status filter",
             get("/api/slices?limit=100&stage=speaker_filter&status=rejected")),
            ("a page deep in the list", get(f"/api/slices?limit=100&offset={args.slices // 2}")),
            ("one slice's detail", get(f"/api/slices/{first}")),
        ]  # fmt: skip

        def decide() -> None:
            r = client.post(f"/api/slices/{first}/decision", json={"decision": "reject"})
            r.raise_for_status()

        rows = [("gathering the slices (once, at start)", gather)]
        rows += [(name, timed(call)) for name, call in steps]
        rows.append(("a decision (append + re-read)", timed(decide)))
    print(f"\n`malmoi review` server, {args.slices} slices ({entries} entries), one process\n")
    print("| step | ms |\n| --- | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
