"""`malmoi review` (issue 23) over a real build, in a real browser (Debian's Chromium, driven by
Playwright): the page lists every slice, kept and rejected; a clip plays for as long as the
slice lasts; a slice is rejected and a text edited with the keyboard, and a reload shows both
(``decisions.jsonl`` holds them); files outside the build are refused; a token, when asked for,
is checked on every request; the API pages, filters and sorts by doubt as the tables say; and
(on tables written here) a slice is followed through its ids, stale rows and its review.

The build (module-scoped, about a minute): the synthetic source (two espeak-ng voices, with its
subtitles), REPET separation, the speaker filter keeping the male voice (so slices and parts of
the other are rejected with their scores), denoise with DNSMOS, Whisper base, export."""

from __future__ import annotations

import csv
import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from review import decisions
from tests.conftest import MALMOI, REPO, build_from, child_env, free_port, run_malmoi
from tests.test_ui import CHROMIUM, CHROMIUM_ARGS, _save_small_png

DOCS_SCREENSHOT = REPO / "docs" / "review-page.png"
LATER = ("segment", "speaker_filter", "denoise", "transcribe", "export")


def table(folder: Path, name: str) -> list[dict[str, str]]:
    path = folder / name
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def build(
    shared: Path, dnsmos_model: Path, whisper_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    root = tmp_path_factory.mktemp("review")
    out = root / "out"
    cfg = {
        "name": "reviewtest",
        "output_dir": str(out),
        "sources": [{"kind": "synthetic", "video": False}],
        "separate": {"engine": "repet"},  # fast, and it leaves the voices mixed in some slices
        "segment": {"gender": "any", "gender_engine": "embedding", "min_duration": 1.0},
        # the synthetic source writes clean clips of each voice: keep the male one
        "speaker_filter": {"references": [str(out / "raw/synthetic/reference/voices/ko+m3")]},
        "denoise": {"scores": True},
        # espeak-ng's Korean is robotic: keep every slice and its subtitle (as configs/demo.yaml)
        "transcribe": {"model": "whisper:base", "min_language_prob": 1.0, "max_cer": 100.0},
        "models": {
            "dir": os.environ["MALMOI_MODEL_DIR"],
            "search_dirs": [str(shared / "models")],
        },
    }
    return described(root, build_from(root, "reviewtest", cfg), out)


def described(root: Path, config: Path, out: Path) -> dict:
    """The build and its tables, and every slice as the tables tell."""
    tables = {
        stage: {t: table(out / stage, f"{t}.csv") for t in ("manifest", "rejected")}
        for stage in LATER
    }
    # every slice, computed from the tables: a slice ends rejected at some stage, or exported
    expected = {r["id"] for s in LATER for r in tables[s]["rejected"]}
    expected |= {r["id"] for r in tables["export"]["manifest"]}
    assert tables["speaker_filter"]["rejected"], "the build should reject the other voice"
    assert tables["export"]["manifest"], "the build should export the kept voice"
    return {"root": root, "config": config, "out": out, "tables": tables, "expected": expected}


@pytest.fixture(scope="module")
def server(build: dict) -> Iterator[str]:
    """`malmoi review CONFIG --port P` running; its URL (as printed)."""
    port = free_port()
    log = build["root"] / "review.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*MALMOI, "review", str(build["config"]), "--port", str(port)],
            cwd=build["root"],
            env=child_env({"PYTHONUNBUFFERED": "1"}),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        url = f"http://127.0.0.1:{port}/"
        assert line.startswith(f"review: {url} "), line + log.read_text()[-3000:]
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "api/summary", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("MALMOI_TEST_BROWSER"):
            pytest.fail(f"{CHROMIUM} missing although scripts/bootstrap should have installed it")
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/test, or apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("#list .row", timeout=30_000)
    page.wait_for_selector("#detail[data-id]", timeout=30_000)
    page.wait_for_function("() => !document.body.dataset.busy")
    return page, errors


def selected(page) -> str:
    return page.get_attribute("#detail", "data-id")


def go_to(page, slice_id: str) -> None:
    """Select ``slice_id`` with the keyboard (j and k from the slice selected)."""
    ids = page.eval_on_selector_all("#list .row", "rows => rows.map(r => r.dataset.id)")
    steps = ids.index(slice_id) - ids.index(selected(page))
    for _ in range(abs(steps)):
        page.keyboard.press("j" if steps > 0 else "k")
    page.wait_for_function(
        "id => document.getElementById('detail').dataset.id === id", arg=slice_id
    )


AUDIO_DURATION = """() => new Promise((done) => {
  const a = document.getElementById('player');
  if (a.readyState >= 1) return done(a.duration);
  a.addEventListener('loadedmetadata', () => done(a.duration));
  a.addEventListener('error', () => done(-1));
  setTimeout(() => done(-2), 20000);
})"""


def test_the_page_lists_every_slice_and_a_clip_plays(build: dict, server: str, browser) -> None:
    page, errors = open_page(browser, server)
    try:
        ids = page.eval_on_selector_all("#list .row", "rows => rows.map(r => r.dataset.id)")
        assert sorted(ids) == sorted(build["expected"])
        assert f"{len(ids)} slices" in page.inner_text("#counts")
        exported = build["tables"]["export"]["manifest"][0]
        # a part the speaker filter rejected has no file of its own: it is cut from its slice
        part = next(r for r in build["tables"]["speaker_filter"]["rejected"] if r.get("part_of"))
        assert not (build["out"] / "speaker_filter" / part["path"]).exists()
        for row in (exported, part):
            go_to(page, row["id"])
            seconds = page.evaluate(AUDIO_DURATION)
            assert abs(seconds - float(row["duration"])) <= 0.05, (row["id"], seconds)
            page.keyboard.press(" ")  # play
            page.wait_for_function(
                "() => { const a = document.getElementById('player');"
                " return !a.paused && a.currentTime > 0.2; }",
                timeout=15_000,
            )
            page.keyboard.press(" ")  # pause
            page.wait_for_function("() => document.getElementById('player').paused")
            # the spectrogram was drawn and cached
            assert (
                page.evaluate(
                    "() => new Promise(done => { const i = document.getElementById('spectrogram');"
                    " if (i.complete) return done(i.naturalWidth);"
                    " i.onload = () => done(i.naturalWidth); i.onerror = () => done(0); })"
                )
                > 100
            )
        assert list((build["out"] / "review" / "cache").glob("spec-*.png"))
        assert not errors
    finally:
        page.close()


def test_keyboard_rejects_and_edits_and_a_reload_shows_both(
    build: dict, server: str, browser
) -> None:
    kept = [r["id"] for r in build["tables"]["export"]["manifest"]]
    target, edited = kept[0], kept[1]
    new_text = "고친 문장입니다, 손으로."
    page, errors = open_page(browser, server)
    try:
        go_to(page, target)
        page.keyboard.press("r")
        page.wait_for_selector(f'#list .row[data-id="{target}"] .badge.review.reject')
        go_to(page, edited)
        before = page.inner_text("#text")
        page.keyboard.press("e")  # Esc cancels: nothing written
        page.keyboard.press("Control+A")
        page.keyboard.type("버려질 글")
        page.keyboard.press("Escape")
        assert page.inner_text("#text") == before
        page.keyboard.press("e")
        page.keyboard.press("Control+A")
        page.keyboard.type(new_text)
        page.keyboard.press("Enter")
        page.wait_for_function(
            "t => document.getElementById('text').textContent === t", arg=new_text
        )
        assert "reviewed 2 of" in page.inner_text("#counts")

        page.reload()
        page.wait_for_selector("#list .row")
        page.wait_for_function("() => !document.body.dataset.busy")
        assert page.locator(f'#list .row[data-id="{target}"] .badge.review.reject').count() == 1
        assert page.locator(f'#list .row[data-id="{edited}"] .badge.review.edited').count() == 1
        go_to(page, edited)
        assert page.inner_text("#text") == new_text
        assert page.inner_text("#review-state").startswith("review: not decided")
        go_to(page, target)
        assert "review: reject" in page.inner_text("#review-state")
        assert "reviewed 2 of" in page.inner_text("#counts")
        assert not errors
    finally:
        page.close()
    lines = decisions.path_of(build["out"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2, lines  # Esc wrote nothing
    found = decisions.load(build["out"])
    assert set(found) == {target, edited}
    assert (found[target].decision, found[target].text) == ("reject", None)
    assert (found[edited].decision, found[edited].text) == ("", new_text)
    by_review = requests.get(server + "api/slices?review=reject", timeout=30).json()
    assert [i["id"] for i in by_review["items"]] == [target]
    export_honours(build, target, edited, new_text)


def export_honours(build: dict, rejected: str, edited: str, new_text: str) -> None:
    """On a copy of the build with the page's decisions, plus a keep of a slice the speaker
    filter rejected: `malmoi export CONFIG` leaves the rejected slice out with its reason,
    writes the edited text to all three metadata files, exports the kept one, `malmoi verify`
    passes, and no earlier stage processes anything (their tables are untouched)."""
    import shutil

    root = build["root"] / "exported"
    out = root / "out"
    shutil.copytree(build["out"], out, symlinks=True)
    cfg = yaml.safe_load(build["config"].read_text(encoding="utf-8"))
    cfg["output_dir"] = str(out)
    config = root / "reviewtest.yaml"
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    sf_rejected = [
        r for r in table(out / "speaker_filter", "rejected.csv")
        if not r.get("part_of") and "below threshold" in r["reason"]
        and (out / "speaker_filter" / r["path"]).is_file()
    ]  # fmt: skip
    assert sf_rejected, "the build should have a slice the speaker filter rejected"
    rescued = sf_rejected[0]["id"]
    decisions.append(out, decisions.Decision(rescued, "keep"))
    earlier = ("ingest", "separate", "segment", "speaker_filter", "denoise", "transcribe")
    before = {s: (out / s / "progress.csv").read_bytes() for s in earlier}

    proc = run_malmoi("export", str(config), cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert {s: (out / s / "progress.csv").read_bytes() for s in earlier} == before
    dataset = out / "export"
    why = {r["id"]: r["reason"] for r in table(dataset, "rejected.csv")}
    assert why.get(rejected) == "rejected in review", why
    assert not (dataset / "wavs" / f"{rejected}.wav").exists()
    rows = [json.loads(x) for x in (dataset / "manifest.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert rejected not in by_id
    assert by_id[edited]["text"] == new_text and by_id[edited]["text_source"] == "review"
    meta = {r["id"]: r for r in table(dataset, "metadata.csv")}
    assert meta[edited]["text"] == new_text
    ljspeech = {
        line.split("|")[0]: line.split("|")[1]
        for line in (dataset / "metadata.txt").read_text(encoding="utf-8").splitlines()
    }
    assert ljspeech[edited] == new_text
    assert rescued in by_id and (dataset / "wavs" / f"{rescued}.wav").is_file()
    proc = run_malmoi("verify", str(dataset), cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client normalises the dots away)."""
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_files_outside_the_build_are_refused(build: dict, server: str) -> None:
    secret = build["root"] / "secret.txt"  # beside the build's folder, not in it
    secret.write_text("not for the page", encoding="utf-8")
    link = build["out"] / "link.txt"
    link.symlink_to(secret)
    try:
        status, body = raw_get(server, "/files/export/manifest.csv")
        assert status == 200 and body.startswith(b"id,"), status  # the build's own files: served
        for path in (
            "/files/../secret.txt",
            "/files/%2e%2e/secret.txt",
            "/files/..%2fsecret.txt",
            "/files/export/../../secret.txt",
            "/files/export/%2e%2e/%2e%2e/secret.txt",
            "/files/" + str(secret),  # //tmp/...: an absolute path
            "/files/%2F" + str(secret).lstrip("/").replace("/", "%2F"),
            "/files/link.txt",  # a link that leads out of the build
            "/files/../../../../../../etc/passwd",
            "/files/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/files//etc/passwd",
        ):
            status, body = raw_get(server, path)
            assert status in (403, 404), (path, status)
            assert b"not for the page" not in body and b"root:" not in body, path
    finally:
        link.unlink()
        secret.unlink()


def test_a_token_when_asked_is_checked_on_every_request(build: dict, monkeypatch) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from malmoi.cli import build_app
    from review.server import create_app, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    token = "s3cret-review-token"
    client = TestClient(create_app(build["out"], token=token, loopback=False))
    paths = ("/", "/static/app.js", "/api/summary", "/api/slices", "/files/export/manifest.csv")
    for path in paths:
        assert client.get(path).status_code == 401, path
        assert client.get(path, params={"token": "wrong-token"}).status_code == 401, path
        assert client.get(path, params={"token": token}).status_code == 200, path
    assert client.get("/api/summary", headers={"X-Malmoi-Token": token}).status_code == 200
    first = client.get("/api/slices", params={"token": token, "limit": 1}).json()["items"][0]
    assert (
        client.post(f"/api/slices/{first['id']}/decision", json={"decision": "keep"}).status_code
        == 401
    )
    page = client.get("/", params={"token": token}).text
    assert f"static/app.js?token={token}" in page  # the page's own requests carry it

    # on loopback no token, but the Host must be loopback (no DNS rebinding), POSTs same-origin
    local = TestClient(create_app(build["out"]), base_url="http://127.0.0.1:8765")
    assert local.get("/api/summary").status_code == 200
    assert local.get("/api/summary", headers={"Host": "evil.example:8765"}).status_code == 403
    assert (
        local.post(
            f"/api/slices/{first['id']}/decision",
            json={"decision": "keep"},
            headers={"Origin": "http://evil.example"},
        ).status_code
        == 403
    )

    # a form's POST (not JSON) is refused: another site cannot post one to the page
    plain = local.post(
        f"/api/slices/{first['id']}/decision",
        content=b'{"decision": "keep"}',
        headers={"Content-Type": "text/plain"},
    )
    assert plain.status_code == 422
    assert first["id"] not in decisions.load(build["out"])

    # the command the stage artifacts name; on another address without --token it makes one
    # and requires it
    import uvicorn

    from flows.build import review_hint
    from malmoi.config import load_config

    hint = review_hint(load_config(build["config"]))
    command = hint.split("`")[1].split()
    assert command == ["malmoi", "review", str(build["out"])]
    served: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    result = CliRunner().invoke(build_app(), [*command[1:], "--host", "0.0.0.0", "--port", "8799"])
    assert result.exit_code == 0, result.output
    assert served["host"] == "0.0.0.0" and served["port"] == 8799
    made = result.output.split("?token=")[1].split()[0]
    remote = TestClient(served["app"], base_url="http://192.168.1.20:8799")
    assert remote.get("/api/summary").status_code == 401
    assert remote.get("/api/summary", params={"token": made}).status_code == 200


def test_the_api_pages_filters_and_sorts_by_doubt(build: dict, server: str) -> None:
    t = build["tables"]

    def get(**params) -> dict:
        r = requests.get(server + "api/slices", params=params, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def ids(**params) -> set[str]:
        got = get(limit=500, **params)
        assert got["total"] == len(got["items"])
        return {i["id"] for i in got["items"]}

    # pages: every slice once
    paged, offset = [], 0
    while True:
        got = get(offset=offset, limit=4)
        assert got["total"] == len(build["expected"])
        paged += [i["id"] for i in got["items"]]
        if len(got["items"]) < 4:
            break
        offset += 4
    assert len(paged) == len(set(paged)) and set(paged) == build["expected"]

    # the stage that decided: rejected slices stop there, kept ones go on to export
    sf_rejected = {r["id"] for r in t["speaker_filter"]["rejected"]}
    assert ids(stage="speaker_filter") == sf_rejected
    assert ids(stage="export") == {r["id"] for r in t["export"]["manifest"]}
    assert ids(status="kept") == {r["id"] for r in t["export"]["manifest"]}
    assert ids(status="rejected") == build["expected"] - {r["id"] for r in t["export"]["manifest"]}
    reasons = requests.get(server + "api/summary", timeout=30).json()["reasons"]
    below = next(r["name"] for r in reasons if "below threshold" in r["name"])
    assert ids(reason=below) == {
        r["id"] for r in t["speaker_filter"]["rejected"] if "below threshold" in r["reason"]
    }
    assert ids(reason="no such reason") == set()

    # text search: a word of an exported text finds that slice; every hit holds the word
    row = t["export"]["manifest"][0]
    word = row["text"].split()[0].strip(".,")
    hits = get(q=word, limit=500)["items"]
    assert row["id"] in {h["id"] for h in hits}
    for h in hits:
        said = [h["id"], h["text"], h["asr_text"], h["subtitle_text"], h["reason"]]
        assert word in " ".join(said)
    assert ids(q="없는말없는말") == set()

    # doubt, from the tables: |value − threshold| of the speaker filter's row of each slice
    column = json.loads((build["out"] / "speaker_filter/threshold.json").read_text())["column"]
    sf_rows = {r["id"]: r for k in ("manifest", "rejected") for r in t["speaker_filter"][k]}
    denoised = {r["id"]: r["parent_id"] for r in t["denoise"]["manifest"]}
    expected = {}
    for sid in build["expected"]:
        sf = sf_rows[sid] if sid in sf_rows else sf_rows[denoised[sid]]
        expected[sid] = abs(float(sf[column]) - float(sf["threshold"]))
    got = get(sort="doubt", limit=500)["items"]
    assert {i["id"] for i in got} == build["expected"]
    assert [i["doubt"] for i in got] == pytest.approx(sorted(expected.values()), abs=1e-9)
    for i in got:
        assert i["doubt"] == pytest.approx(expected[i["id"]], abs=1e-9), i["id"]
    surest = get(sort="-doubt", limit=3)["items"]
    assert [i["doubt"] for i in surest] == pytest.approx(
        sorted(expected.values(), reverse=True)[:3], abs=1e-9
    )
    # the filters and the sort together, on a page
    page = get(stage="speaker_filter", sort="doubt", offset=2, limit=3)
    nearest = sorted(sf_rejected, key=lambda k: expected[k])
    assert page["total"] == len(sf_rejected)
    assert [i["doubt"] for i in page["items"]] == pytest.approx(
        [expected[k] for k in nearest[2:5]], abs=1e-9
    )
    for bad in ({"sort": "bogus"}, {"limit": 100_000}, {"offset": -1}):
        assert requests.get(server + "api/slices", params=bad, timeout=30).status_code == 422


def test_a_screenshot_of_the_page(build: dict, server: str, browser, tmp_path: Path) -> None:
    page, errors = open_page(browser, server)
    try:
        page.select_option("#sort", "doubt")  # the list is fetched again, sorted
        page.wait_for_function("() => !document.body.dataset.busy")
        doubts = page.eval_on_selector_all(
            "#list .row .doubt", "cells => cells.map(c => Number(c.textContent.slice(1)))"
        )
        assert doubts == sorted(doubts)
        kept = build["tables"]["export"]["manifest"][2]["id"]
        page.wait_for_selector(f'#list .row[data-id="{kept}"]')
        page.click(f'#list .row[data-id="{kept}"]')
        page.wait_for_function(
            "id => document.getElementById('detail').dataset.id === id", arg=kept
        )
        page.evaluate(
            "() => new Promise(done => { const i = document.getElementById('spectrogram');"
            " if (i.complete) return done(); i.onload = done; i.onerror = done; })"
        )
        shot = tmp_path / "review-page.png"
        page.screenshot(path=str(shot))
        assert not errors
    finally:
        page.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("MALMOI_UPDATE_DOCS") == "1" or not DOCS_SCREENSHOT.exists():
        _save_small_png(shot, DOCS_SCREENSHOT)


def write_table(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_a_slice_is_followed_through_its_ids_and_its_review(tmp_path: Path) -> None:
    """One entry per slice: denoise's new id continues it, the speaker filter's parts are
    slices of their own, a later stage's row of a slice rejected before is stale — unless
    export kept it for the review; an edit export applied still shows the stages' own text."""
    from review.slices import Build

    out = tmp_path / "out"

    def row(rid: str, parent: str, start: float, stop: float, **more) -> dict:
        return {"id": rid, "parent_id": parent, "path": f"{rid}.wav", "duration": stop - start,
                "start": start, "stop": stop, **more}  # fmt: skip

    below = "self_similarity 0.600 below threshold 0.800 (auto: self-enrollment)"
    write_table(
        out / "segment/manifest.csv",
        [row("a", "v", 0, 2), row("b", "v", 3, 5), row("c", "v", 6, 10)],
    )
    sf = {"self_similarity": 0.9, "threshold": 0.8, "part_of": ""}
    write_table(
        out / "speaker_filter/manifest.csv",
        [row("a", "v", 0, 2, **sf), row("c.1", "c", 7, 8, **sf | {"self_similarity": 0.95})],
    )
    write_table(
        out / "speaker_filter/rejected.csv",
        [
            row("b", "v", 3, 5, **sf | {"self_similarity": 0.7}, reason=below),
            row("c", "v", 6, 10, **sf, reason="the voice changes inside: kept c.1"),
            row("c.2", "c", 8, 9, **sf | {"self_similarity": 0.6, "part_of": "c"}, reason=below),
        ],
    )
    (out / "speaker_filter/threshold.json").write_text('{"column": "self_similarity"}')
    write_table(
        out / "denoise/manifest.csv",
        [row("a.denoised", "a", 0, 2), row("c.1.denoised", "c.1", 7, 8), row("b.dn", "b", 3, 5)],
    )
    write_table(
        out / "transcribe/manifest.csv",
        [
            row("a.denoised", "a", 0, 2, text="가나다", text_source="subtitles"),
            row("c.1.denoised", "c.1", 7, 8, text="라마", text_source="asr"),
        ],
    )
    write_table(
        out / "export/manifest.csv",
        [
            row("a.denoised", "a.denoised", 0, 2, text="고친 글", text_source="review"),
            row("b", "b", 3, 5, text="", text_source=""),
        ],
    )
    write_table(
        out / "export/rejected.csv",
        [row("c.1.denoised", "c.1.denoised", 7, 8, reason="rejected in review")],
    )
    decisions.append(out, decisions.Decision("a.denoised", "", "고친 글"))
    decisions.append(out, decisions.Decision("b", "keep"))

    b = Build(out)
    got = {e.id: e for e in b.entries}
    assert set(got) == {"a.denoised", "b", "c", "c.1.denoised", "c.2"}  # b.dn: stale
    a = got["a.denoised"]
    assert a.ids == ["a", "a.denoised"] and (a.stage, a.status) == ("export", "kept")
    assert (a.original_text, a.text_source, a.text) == ("가나다", "subtitles", "고친 글")
    assert a.doubt == pytest.approx(0.1)
    assert [(s.stage, s.status) for s in got["b"].steps] == [
        ("segment", "kept"),
        ("speaker_filter", "rejected"),
        ("export", "kept"),
    ]
    assert got["b"].review is not None and got["b"].review.decision == "keep"
    part = got["c.1.denoised"]
    assert part.ids == ["c.1", "c.1.denoised"]
    assert (part.stage, part.status, part.reason) == ("export", "rejected", "rejected in review")
    assert part.doubt == pytest.approx(0.15)  # the speaker filter's, not the review's
    assert (got["c"].stage, got["c"].status) == ("speaker_filter", "rejected")
    assert got["c.2"].doubt == pytest.approx(0.2)
    nearest = [e.id for e in b.page(sort="doubt")[1]]  # a, b and c lie 0.1 from theirs
    assert set(nearest[:3]) == {"a.denoised", "b", "c"} and nearest[3:] == ["c.1.denoised", "c.2"]
