"""``runner: dask``: each stage's items as Prefect task runs on a Dask cluster of worker
processes (prefect-dask), each worker setting a stage up once; the stage loop's ``submit``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from malmoi.config import ConfigError, parse_config
from malmoi.errors import StageStopped
from malmoi.manifest import read_manifest, read_records
from malmoi.stage import Item, Result
from tests.conftest import run_malmoi
from tests.media import mp4_with_audio
from tests.test_stage import CopyStage, Params, _items

STAGES = ("ingest", "separate", "segment", "speaker_filter", "denoise", "transcribe", "export")


# --- the stage loop's submit (no Dask: a thread pool stands for the workers) ------------------


class CountingStage(CopyStage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_up = 0

    def setup(self) -> None:
        self.set_up += 1


def _away(tmp_path: Path) -> tuple[CountingStage, Any, ThreadPoolExecutor]:
    """A stage that processes items sent to it (as a worker's kept stage does), and a submit."""
    remote = CountingStage(Params(), tmp_path / "out")
    pool = ThreadPoolExecutor(2)

    def submit(item: Item) -> Future[tuple[Result[Any], float]]:
        def work() -> tuple[Result[Any], float]:
            remote.ensure_setup()
            return remote._timed_process(item)

        return pool.submit(work)

    return remote, submit, pool


def test_submit_records_here_what_was_processed_elsewhere(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    texts = {"a": "aaaa", "b": "bb", "c": "bad", "d": "boom", "e": "eeeee", "f": "f"}
    for name, text in texts.items():
        (folder / f"{name}.in").write_text(text)
    inline = CountingStage(Params(), tmp_path / "inline")
    expected = inline.run(_items(folder, "x"))
    remote, submit, pool = _away(tmp_path)
    here = CountingStage(Params(), tmp_path / "out")
    with pool:
        report = here.run(_items(folder, "x"), submit=submit, window=3)
    assert here.set_up == 0 and remote.set_up == 1  # the model loads where the work is
    assert (report.processed, report.failed, report.kept) == (4, 2, 4)
    assert (report.processed, report.failed) == (expected.processed, expected.failed)
    got = _rows(tmp_path / "out", tmp_path / "out")
    want = _rows(tmp_path / "inline", tmp_path / "inline")
    pd.testing.assert_frame_equal(got, want)
    failures = read_manifest(tmp_path / "out", "failures.csv").set_index("id")
    assert failures.loc["c", "reason"] == "not a good file"
    assert failures.loc["d", "reason"] == "ValueError: unexpected second line"
    # a rerun sends only the input whose unexpected error is tried again
    remote, submit, pool = _away(tmp_path)
    sent: list[str] = []

    def recording(item: Item) -> Future[tuple[Result[Any], float]]:
        sent.append(item.id)
        return submit(item)

    with pool:
        rerun = CountingStage(Params(), tmp_path / "out").run(
            _items(folder, "x"), submit=recording, window=3
        )
    assert (rerun.skipped, rerun.failed, sent) == (4, 2, ["d"])


def test_submit_keeps_at_most_window_in_flight(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i}.in").write_text("x" * (i + 1))
    remote = CountingStage(Params(delay=0.05), tmp_path / "out")
    in_flight, most = 0, 0
    pool = ThreadPoolExecutor(8)

    def submit(item: Item) -> Future[tuple[Result[Any], float]]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)

        def work() -> tuple[Result[Any], float]:
            return remote._timed_process(item)

        fut = pool.submit(work)

        def left(_: Future[Any]) -> None:
            nonlocal in_flight
            in_flight -= 1

        fut.add_done_callback(left)
        return fut

    with pool:
        report = CountingStage(Params(), tmp_path / "out").run(
            _items(folder, "x"), submit=submit, window=3
        )
    assert report.processed == 8 and most == 3


def test_an_environment_failure_elsewhere_stops_the_stage_and_cancels_the_rest(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in {"a": "oom", **{f"z{i}": "zz" for i in range(6)}}.items():
        (folder / f"{name}.in").write_text(text)
    futures: list[Future[Any]] = []
    pool = ThreadPoolExecutor(1)
    remote = CountingStage(Params(delay=0.2), tmp_path / "out")

    def submit(item: Item) -> Future[tuple[Result[Any], float]]:
        futures.append(pool.submit(remote._timed_process, item))
        return futures[-1]

    with pool, pytest.raises(StageStopped, match=r"a\.in: MemoryError"):
        CountingStage(Params(), tmp_path / "out").run(_items(folder, "x"), submit=submit, window=3)
    assert any(f.cancelled() for f in futures)  # not waited for
    assert "a" not in {r["id"] for r in read_records(tmp_path / "out/progress.csv")}


# --- config ----------------------------------------------------------------------------------


def test_runner_and_dask_keys_are_checked() -> None:
    base = {"name": "x", "output_dir": "out", "sources": [{"kind": "synthetic"}]}
    assert parse_config(base).runner == "local"
    cfg = parse_config({**base, "runner": "dask", "dask": {"address": "tcp://10.0.0.5:8786"}})
    assert cfg.runner == "dask" and cfg.dask.address == "tcp://10.0.0.5:8786"
    assert (cfg.dask.n_workers, cfg.dask.threads_per_worker) == (2, 1)
    with pytest.raises(ConfigError, match=r"unknown key 'dask.workers'; allowed: address, n_w"):
        parse_config({**base, "runner": "dask", "dask": {"workers": 4}})
    with pytest.raises(ConfigError, match="'runner': Input should be 'local' or 'dask'"):
        parse_config({**base, "runner": "ray"})
    with pytest.raises(ConfigError, match=r"dask\.n_workers"):
        parse_config({**base, "dask": {"n_workers": 0}})


# --- build-dataset on Dask, for real ---------------------------------------------------------


def _config(tmp_path: Path, name: str, **extra: Any) -> Path:
    """The demo's pipeline, shorter: the synthetic episode plus the three reference clips of its
    other voice as local files (four inputs), every stage present; into ``tmp_path/out`` (ids
    hash the input's path, so both builds use the same folder, moved away after each)."""
    out = tmp_path / "out"
    cfg = {
        "name": "dasktest",
        "output_dir": str(out),
        "sources": [
            {"kind": "synthetic", "video": False},
            {"kind": "local", "paths": [str(out / "raw/synthetic/reference/voices/ko+f2")]},
        ],
        "ingest": {"sample_rate": 22050, "channels": "mono"},
        "separate": {"engine": "spleeter", "codec": "wav"},
        # ina's gender CNN: segment embeds nothing, so the speaker filter embeds every slice
        "segment": {"gender_engine": "ina", "min_duration": 1.0},
        "speaker_filter": {"references": [str(out / "raw/synthetic/reference/voices/ko+m3")]},
        "denoise": {"scores": True},
        # as the demo: espeak-ng's Korean is not what Whisper base recognises (README)
        "transcribe": {"min_language_prob": 1.0, "max_cer": 1.0},
        "export": {"sample_rate": 16000},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A local Dask cluster of two worker processes, one thread each, for the module."""
    import distributed

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(scope="module")
def builds(
    tmp_path_factory: pytest.TempPathFactory,
    spleeter_model: Path,
    dnsmos_model: Path,
    cluster: Any,
    whisper_model: Path,
) -> dict[str, Any]:
    """The same config built with the default runner (``local``) and on ``cluster`` (``dask``)."""
    tmp = tmp_path_factory.mktemp("dask")
    took = {}
    procs = {}
    for name, extra in {
        "local": {},
        "dask": {"runner": "dask", "dask": {"address": cluster.scheduler_address}},
    }.items():
        started = time.perf_counter()
        procs[name] = run_malmoi("build", str(_config(tmp, name, **extra)), timeout=900)
        took[name] = time.perf_counter() - started
        assert procs[name].returncode == 0, procs[name].stderr[-4000:]
        (tmp / "out").rename(tmp / name)
    print(f"build wall time: local {took['local']:.0f} s, dask {took['dask']:.0f} s")
    return {"root": tmp, "procs": procs}


def _rows(folder: Path, root: Path, table: str = "manifest.csv") -> pd.DataFrame:
    """A stage's table (``manifest.csv`` or ``rejected.csv``), rows by id (the order items
    finish in), without ``key`` (it hashes the input's fingerprint, which holds the mtime of the
    media each build generates anew), each build's own folder written as <out>."""
    df = read_manifest(folder, table)
    if df.empty:
        return df
    df = df.sort_values("id").reset_index(drop=True).drop(columns="key")
    return df.map(lambda v: v.replace(str(root), "<out>") if isinstance(v, str) else v)


def test_dask_build_gets_the_same_manifests_and_audio_as_the_default_runner(
    builds: dict[str, Any],
) -> None:
    root = builds["root"]
    a, b = root / "local", root / "dask"
    for stage in STAGES:
        rows_a, rows_b = _rows(a / stage, a), _rows(b / stage, b)
        assert len(rows_a) >= (4 if stage in ("ingest", "speaker_filter") else 1), stage
        pd.testing.assert_frame_equal(rows_a, rows_b, obj=f"{stage}/manifest.csv")
        # what each stage dropped, with its reason and scores (the speaker filter's similarity,
        # score and threshold live here for every slice it rejected)
        rej_a, rej_b = _rows(a / stage, a, "rejected.csv"), _rows(b / stage, b, "rejected.csv")
        if stage == "speaker_filter":
            assert len(rej_a) >= 1 and {"reason", "score", "similarity"} <= set(rej_a.columns)
        pd.testing.assert_frame_equal(rej_a, rej_b, obj=f"{stage}/rejected.csv")
        for path in read_manifest(a / stage)["path"]:
            rel = Path(path).relative_to(a / stage)
            # byte for byte: the same float32/PCM samples and the same header (the models give
            # the same numbers in a Dask worker as in the flow's process)
            assert (a / stage / rel).read_bytes() == (b / stage / rel).read_bytes(), rel
    for name in ("metadata.csv", "metadata.txt"):
        assert (a / "export" / name).read_bytes() == (b / "export" / name).read_bytes()
    # (the workers of this cluster are the test's children: their task-run logs, one per item,
    # are in the test's output, not the build's; the last test of this file checks them)


def test_on_dask_the_speaker_filter_embeds_its_slices_in_batches(builds: dict[str, Any]) -> None:
    """The speaker filter's batched embedding (its ``prepare``) runs in the flow's process
    before the items go to the workers, which read each embedding from its cache."""
    rows = read_records(builds["root"] / "dask/speaker_filter/manifest.csv") + read_records(
        builds["root"] / "dask/speaker_filter/rejected.csv"
    )
    slices = sum(1 for r in rows if not r["part_of"])  # the rest: candidate parts of a slice
    log = builds["procs"]["dask"].stderr
    done = re.findall(r"speaker_filter: embedded (\d+) of (\d+) slices", log)
    assert slices > 4 and done and done[-1] == (str(slices), str(slices)), log[-3000:]
    # one cache per row: a slice's (embedding and windows) or a part's (its windows' mean)
    assert len(list((builds["root"] / "dask/speaker_filter/embeddings").glob("*.npz"))) == len(rows)


def test_each_worker_sets_a_stage_up_once_not_per_item(
    builds: dict[str, Any], cluster: Any
) -> None:
    import distributed

    from malmoi.workers import counts

    with distributed.Client(cluster.scheduler_address) as client:
        per_worker = client.run(counts)
    assert len(per_worker) == 2
    items: dict[str, int] = {}
    for seen in per_worker.values():
        for run, n in seen["setups"].items():
            assert n == 1, (run, per_worker)
        for run, n in seen["items"].items():
            stage = run.split("/")[0]
            items[stage] = items.get(stage, 0) + n
    assert set(items) == set(STAGES), per_worker
    # more items than workers, so a setup per item would show
    for stage in ("ingest", "speaker_filter", "denoise", "transcribe", "export"):
        assert items[stage] > 2, (stage, items)
    # both workers took items of a stage with many
    assert all(
        any(run.startswith("denoise/") for run in seen["items"]) for seen in per_worker.values()
    ), per_worker


def test_a_dask_config_without_address_starts_a_local_cluster(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        mp4_with_audio(raw / f"v{i}.mp4", seconds=1.0)
    cfg = {
        "name": "dasklocal",
        "output_dir": str(tmp_path / "out"),
        "sources": [{"kind": "local", "paths": [str(raw)]}],
        "runner": "dask",
        "dask": {"n_workers": 2, "threads_per_worker": 1},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_malmoi("build", str(path), "--only", "ingest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dask: 2 worker(s), 2 thread(s)" in proc.stderr
    # the workers report to the build's temporary server, which the build started early
    # (flows/server.py); they start none of their own
    assert proc.stderr.count("Prefect's temporary server is up on") == 1, proc.stderr[-3000:]
    assert "Starting temporary server" not in proc.stderr, proc.stderr[-3000:]
    assert "ingest: 3 processed, 0 skipped, 0 failed, 3 kept" in proc.stdout
    assert len(read_manifest(tmp_path / "out/ingest")) == 3
    assert re.search(r"Task run 'ingest: v1-[^']+' - Finished in state Completed", proc.stderr)
