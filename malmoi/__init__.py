"""malmoi (말모이): build training-ready Korean speech datasets from crawled audio and video.

The core package holds the contracts every stage shares: configuration (:mod:`malmoi.config`),
manifests (:mod:`malmoi.manifest`), atomic files (:mod:`malmoi.files`),
external tools (:mod:`malmoi.tools`), audio I/O (:mod:`malmoi.audio`), ids (:mod:`malmoi.ids`),
the model store (:mod:`malmoi.models`), the stage base class (:mod:`malmoi.stage`) and the CLI
(:mod:`malmoi.cli`). Stages live in their own top-level packages: ``crawl``, ``separate``,
``segment``, ``denoise``, ``speaker_filter``; ``flows`` wires them into Prefect.
"""

__version__ = "0.1.0"
