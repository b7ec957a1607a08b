"""The stage a Dask worker process keeps between items: built and set up (models loaded) by the
first item of a stage run that reaches the worker, reused by every later one.

Keyed by the stage's name and the run's token (one per stage run in the flow), so a new run
builds the stage again: a stage's setup may read what earlier stages wrote (the export's
lineage, the speaker filter's profile), which can change between runs. One stage is kept per
process (the flow runs its stages one after another), so a worker holds one stage's models at a
time. Prefect-free; the Prefect task around it is ``flows.build.process_item``.
"""

from __future__ import annotations

import gc
import threading
from collections import Counter

from malmoi.config import PipelineConfig
from malmoi.logs import get_logger
from malmoi.stage import Item, Result, Stage

log = get_logger(__name__)

_lock = threading.Lock()
_kept: dict[tuple[str, str], Stage] = {}
# what this process did, by (stage, run token): how often the stage was set up, items processed
SETUPS: Counter[tuple[str, str]] = Counter()
ITEMS: Counter[tuple[str, str]] = Counter()


def stage_for(cfg: PipelineConfig, name: str, run: str) -> Stage:
    """The stage ``name`` of ``cfg`` for the stage run ``run``, set up once in this process."""
    from malmoi.registry import spec

    key = (name, run)
    with _lock:  # a worker with several threads sets the stage up once
        stage = _kept.get(key)
        if stage is None:
            if _kept:
                _kept.clear()  # the previous stage's models go
                gc.collect()
            stage = spec(name).make(cfg)
            stage.ensure_setup()
            SETUPS[key] += 1
            _kept[key] = stage
            log.info("%s: set up in this worker for run %s", name, run)
        return stage


def process_here(cfg: PipelineConfig, name: str, run: str, item: Item) -> tuple[Result, float]:
    """Process one item of stage ``name`` in this process with the kept stage; returns the
    result and the seconds :meth:`~malmoi.stage.Stage.process` took."""
    stage = stage_for(cfg, name, run)
    ITEMS[(name, run)] += 1
    return stage._timed_process(item)


def counts() -> dict[str, dict[str, int]]:
    """This process's setups and items by stage run (``"name/run"``), for tests and logs."""
    return {
        "setups": {f"{n}/{r}": c for (n, r), c in SETUPS.items()},
        "items": {f"{n}/{r}": c for (n, r), c in ITEMS.items()},
    }
