"""The Prefect UI, checked in a real browser: a `malmoi build` run against a real `prefect server`,
then its flow-run page opened in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, PrefectServer, run_malmoi
from tests.test_flow import _local_config

CHROMIUM = os.environ.get("MALMOI_CHROMIUM", "/usr/bin/chromium")
# what works here: no GPU, no sandbox (root in a container), and nothing fetched in the background
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SCREENSHOT = REPO / "docs" / "prefect-flow-run.png"


def _flow_run(api_url: str, name: str) -> dict:
    """The flow run called ``name``, as the Prefect API reports it."""
    found = requests.post(
        f"{api_url}/flow_runs/filter",
        json={"flow_runs": {"name": {"any_": [name]}}, "limit": 2},
        timeout=30,
    )
    found.raise_for_status()
    runs = found.json()
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("MALMOI_TEST_BROWSER"):  # scripts/test installs it: missing is a failure
            pytest.fail(f"{CHROMIUM} missing although scripts/bootstrap should have installed it")
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/test, or apt-get install chromium")
    return CHROMIUM


@pytest.mark.slow
def test_flow_run_page_shows_state_and_artifacts(
    shared: Path, chromium: str, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """The flow-run page of a real run renders in Chromium with the run's state, its stage logs
    and the stages' artifacts (not "Can't connect to Server API"): a table and a progress
    artifact per stage, and the failures of ingest."""
    from playwright.sync_api import expect, sync_playwright

    name = "uitest"
    proc = run_malmoi(
        "build",
        str(_local_config(tmp_path, name, segment={"gender": "any", "gender_engine": "embedding"})),
        cwd=tmp_path,
        env={**prefect_server.env, "MALMOI_MODEL_PATH": str(shared / "models")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    started = re.search(r"Beginning flow run '([^']+)' for flow 'build-dataset'", proc.stderr)
    assert started, proc.stderr[-3000:]
    run = _flow_run(prefect_server.api_url, started.group(1))
    state = run["state"]["name"]
    assert state == "Completed", run["state"]

    shot = tmp_path / "prefect-flow-run-logs.png"
    artifacts_shot = tmp_path / "prefect-flow-run.png"  # the state and the artifacts: for docs/
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{prefect_server.ui_url}/runs/flow-run/{run['id']}")
            try:
                # the page header: the run's name and its state badge
                expect(page.get_by_text(run["name"]).first).to_be_visible(timeout=60_000)
                expect(page.get_by_text(state, exact=True).first).to_be_visible(timeout=60_000)
                # the stage logs reached Prefect and the Logs tab shows them
                logged = page.get_by_text("broken.mkv: not a readable media file").first
                expect(logged).to_be_visible(timeout=60_000)
                page.screenshot(path=str(shot))
                text = page.inner_text("body")
                assert "Can't connect to Server API" not in text
                page.get_by_text("Artifacts", exact=True).first.click()
                expect(page.get_by_text("Task runs", exact=True).first).to_be_visible(
                    timeout=60_000
                )
                page.wait_for_timeout(2000)  # the run graph (a canvas) draws the stages
                page.screenshot(path=str(artifacts_shot))
                # the artifacts of the stage tasks, listed under "Task runs" by description
                page.mouse.wheel(0, 3000)
                for text in (
                    f"ingest of {name}: ingest: 1 processed",
                    "Inputs that ingest could not process",
                    f"separate of {name}: separate: 1 processed",
                    f"segment of {name}: share of the inputs finished",
                ):
                    shown = page.get_by_text(text).first
                    shown.scroll_into_view_if_needed(timeout=60_000)
                    expect(shown).to_be_visible(timeout=60_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"))  # what the browser showed
                raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000 and artifacts_shot.stat().st_size > 10_000
    if os.environ.get("MALMOI_UPDATE_DOCS") == "1":
        _save_small_png(artifacts_shot, DOCS_SCREENSHOT)


def _save_small_png(src: Path, dest: Path) -> None:
    """``src`` as a 128-colour palette PNG at ``dest`` (the UI's flat colours: ~32 KB, not 85)."""
    from PIL import Image

    dest.parent.mkdir(exist_ok=True)
    with Image.open(src) as im:
        small = im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        small.save(dest, optimize=True)
