"""Measure Korean spoken-form normalisers on the hand-written table (tests/data/korean_spoken.tsv).

Each library candidate lives in a scratch venv of its own (``.scratch/venv-<package>``, made
with ``--setup``: never in the project's .venv); this script runs there as a worker
(``--worker NAME``) that reads the written forms on stdin and prints the library's outputs as
JSON, so that conflicting dependencies never meet. ``transcribe.normalize.spoken`` runs in this
process. A case passes when the output equals the expected spoken form exactly, and "ignoring
spaces" when it does once all whitespace is removed (what the CER sees).

    .venv/bin/python -m eval.korean_normalizers [--setup] [--venvs .scratch]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "data" / "korean_spoken.tsv"
ACRONYMS = "[acronyms]"

# package on PyPI -> import name (the worker's adapter below)
CANDIDATES = {
    "nemo_text_processing": "nemo_text_processing",
    "g2pk": "g2pk",
    "g2pk2": "g2pk2",
    "g2pkk": "g2pkk",
    "korean-number": "korean_number",
    "korean-text-normalizer": "korean_text_normalizer",
}


def read_table(path: Path = TABLE) -> list[tuple[str, str, str]]:
    """The table's rows: (written, spoken, note); a note starting with ``[acronyms]`` marks a
    case read with ``acronyms=True``."""
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if i == 0 or not line.strip():
            continue
        written, spoken, note = line.split("\t")
        rows.append((written, spoken, note))
    return rows


# ---- the worker: runs inside a candidate's venv, standard library + the candidate only ----


def _g2pk_family(module: str) -> Callable[[str], str]:
    """g2pk's number reading (``numerals.convert_num``) on Mecab-annotated text, as its G2p
    does before the pronunciation rules (which would rewrite every word, so they are left
    out); annotation tags removed after."""
    numerals = __import__(f"{module}.numerals", fromlist=["convert_num"])
    utils = __import__(f"{module}.utils", fromlist=["annotate"])
    try:
        import mecab

        tagger = mecab.MeCab()
    except Exception:  # no Mecab: convert_num reads every digit alone
        tagger = None

    def run(text: str) -> str:
        annotated = utils.annotate(text, tagger) if tagger else text
        return re.sub(r"/[A-Z]", "", numerals.convert_num(annotated))

    return run


def _nemo() -> Callable[[str], str]:
    from nemo_text_processing.text_normalization.normalize import Normalizer

    cache = Path(sys.prefix) / "nemo-cache"
    cache.mkdir(exist_ok=True)
    normalizer = Normalizer(input_case="cased", lang="ko", cache_dir=str(cache))
    return lambda text: normalizer.normalize(text, punct_post_process=True)


def _korean_number() -> Callable[[str], str]:
    from korean_number import num2kor

    def run(text: str) -> str:  # only integers: every digit run (commas dropped) read Sino
        return re.sub(r"\d[\d,]*", lambda m: num2kor(int(m.group().replace(",", ""))), text)

    return run


def _adapter(name: str) -> Callable[[str], str]:
    if name == "nemo_text_processing":
        return _nemo()
    if name in ("g2pk", "g2pk2", "g2pkk"):
        return _g2pk_family(name)
    if name == "korean_text_normalizer":
        import korean_text_normalizer  # noqa: F401  (its wheel holds no module: fails here)
    if name == "korean_number":
        return _korean_number()
    raise SystemExit(f"no adapter for {name}")


def worker(name: str) -> None:
    """Read written forms (JSON list) on stdin, print the outputs (JSON list) on stdout."""
    run = _adapter(name)
    outputs = []
    for text in json.load(sys.stdin):
        try:
            outputs.append(run(text))
        except Exception as exc:  # one case's crash is that case's failure
            outputs.append(f"<error {type(exc).__name__}>")
    sys.stdout.write(json.dumps(outputs, ensure_ascii=False) + "\n")


# ---- the measurement: runs in the project's .venv ----


def setup(venvs: Path) -> None:
    """A venv per candidate under ``venvs``, the package pip-installed there; the pip log is
    kept next to it (``log-<package>.txt``) for the report's "why not"."""
    venvs.mkdir(parents=True, exist_ok=True)
    for package in CANDIDATES:
        venv = venvs / f"venv-{package}"
        if not venv.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        log = venvs / f"log-{package}.txt"
        with log.open("w") as out:
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", package, "python-mecab-ko"]
                if package.startswith("g2pk")
                else [str(venv / "bin" / "pip"), "install", package],
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def _version(venv: Path, package: str) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def score(outputs: list[str], rows: list[tuple[str, str, str]]) -> tuple[int, int]:
    """Cases passed exactly, and passed once whitespace is removed."""
    exact = spaced = 0
    for out, (_, spoken, _) in zip(outputs, rows, strict=True):
        exact += out == spoken
        spaced += re.sub(r"\s+", "", out) == re.sub(r"\s+", "", spoken)
    return exact, spaced


def measure(venvs: Path, show: int = 0) -> list[list[str]]:
    """One row per candidate and one for malmoi's own module: library, version, installs,
    passed exactly, passed ignoring spaces, and the total."""
    rows = read_table()
    plain = [(w, s, n) for w, s, n in rows if not n.startswith(ACRONYMS)]
    written = [w for w, _, _ in plain]
    table = []
    for package, module in CANDIDATES.items():
        venv = venvs / f"venv-{package}"
        version = _version(venv, package)
        if version is None:
            table.append(
                [package, "-", "no: not installed (run --setup)", "-", "-", str(len(plain))]
            )
            continue
        done = subprocess.run(
            [str(venv / "bin" / "python"), str(Path(__file__).resolve()), "--worker", module],
            input=json.dumps(written),
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1][:70]
            table.append(
                [package, version, f"yes, import fails: {last}", "-", "-", str(len(plain))]
            )
            continue
        outputs = json.loads(done.stdout.strip().splitlines()[-1])
        exact, spaced = score(outputs, plain)
        table.append([package, version, "yes", str(exact), str(spaced), str(len(plain))])
        for out, (w, s, _) in list(zip(outputs, plain, strict=True))[:show]:
            print(f"{package}: {w!r} -> {out!r} (want {s!r})", file=sys.stderr)

    from transcribe.normalize import spoken

    outputs = [spoken(w, acronyms=n.startswith(ACRONYMS)) for w, _, n in rows]
    exact, spaced = score(outputs, rows)
    table.append(
        ["malmoi transcribe.normalize", "-", "yes", str(exact), str(spaced), str(len(rows))]
    )
    return table


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments; print the Markdown table of the measurement (or act as a worker)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--venvs", type=Path, default=ROOT / ".scratch")
    parser.add_argument("--setup", action="store_true", help="make the venvs, install")
    parser.add_argument("--show", type=int, default=0, help="print N outputs per library")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    if args.setup:
        setup(args.venvs)
    from eval.common import markdown_table

    header = ["library", "version", "installs here", "passed", "ignoring spaces", "cases"]
    print(markdown_table(header, measure(args.venvs, args.show), right=(3, 4, 5)))


if __name__ == "__main__":
    main()
