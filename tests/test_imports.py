"""The runtime's import graph, read with ``ast`` (nothing is imported): no runtime module imports
the research code (``eval``), the benches (``bench``) or the tests, and the runtime modules import
each other without a cycle — module-level and function-level imports alike, so an import inside
a function cannot hide a circle. Imports under ``if TYPE_CHECKING:`` are annotations only and
are not counted.

The runtime packages are the wheel's: those setuptools finds by pyproject.toml's
``[tool.setuptools.packages.find]``, so a new package is covered as soon as it exists."""

from __future__ import annotations

import ast
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("eval", "bench", "tests")
# the one allowance: ``malmoi eval …`` runs the research code from a checkout
ALLOWED = {("malmoi.cli", "eval")}


def runtime_packages() -> list[str]:
    """The top-level packages setuptools puts in the wheel, by pyproject's find settings."""
    from setuptools import find_packages

    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    find = meta["tool"]["setuptools"]["packages"]["find"]
    found = find_packages(str(REPO), include=find["include"], exclude=find["exclude"])
    return sorted({p.split(".")[0] for p in found})


def test_the_wheel_holds_the_stages_and_not_the_research() -> None:
    from malmoi.registry import STAGES

    packages = runtime_packages()
    assert {"malmoi", "flows", *STAGES} <= set(packages), packages
    assert not {"eval", "tests", "bench"} & set(packages), packages


def runtime_modules() -> dict[str, Path]:
    """Dotted name -> file of every .py file of the runtime packages."""
    out: dict[str, Path] = {}
    for pkg in runtime_packages():
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imported_names(module: str, path: Path) -> list[str]:
    """Every module name ``module`` imports (absolute; ``from a import b`` gives ``a`` and
    ``a.b``, since ``b`` may be a submodule)."""
    is_pkg = path.name == "__init__.py"
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit_one(sub)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            names.append(prefix)
            names.extend(f"{prefix}.{a.name}" for a in node.names if a.name != "*")
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return names


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(edges between runtime modules, forbidden imports as "module -> name" lines)."""
    modules = runtime_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    bad: list[str] = []
    for mod, path in modules.items():
        for name in imported_names(mod, path):
            top = name.split(".")[0]
            if top in FORBIDDEN and (mod, top) not in ALLOWED:
                bad.append(f"{mod} -> {name}")
            if name in modules and name != mod:
                graph[mod].add(name)
    return graph, sorted(set(bad))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_runtime_packages_are_found():
    modules = runtime_modules()
    assert "malmoi.cli" in modules and "speaker_filter.stage" in modules
    assert not any(m.split(".")[0] in FORBIDDEN for m in modules)


def test_runtime_does_not_import_research_bench_or_tests():
    _, bad = import_graph()
    assert not bad, "runtime modules import research/bench/test code:\n" + "\n".join(bad)


def test_runtime_imports_have_no_cycle():
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among runtime modules: " + " -> ".join(cycle or [])


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from a.hidden import X\n"
        "def f():\n    from .b import c\n    import eval.common\n",
        encoding="utf-8",
    )
    names = imported_names("pkg.m", path)
    assert "pkg.b" in names and "pkg.b.c" in names and "eval.common" in names
    assert not any(n.startswith("a.hidden") for n in names)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_malmoi_eval_without_the_checkout_says_so_and_exits_2(tmp_path):
    """As from an installed wheel (the runtime packages alone, no ``eval/``, the editable
    install's path hooks off): each ``malmoi eval`` command prints one line, that it needs a
    source checkout, and exits 2."""
    for pkg in runtime_packages():
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for args in (["denoise", "--no-dnsmos"], ["separation", "--mixtures", "unused"]):
        code = (
            f"import sys; sys.path += {site.getsitepackages()!r}\n"  # after the stdlib
            "from malmoi.cli import main\n"
            f"sys.argv = ['malmoi', 'eval', *{args!r}]\n"
            "main()\n"
        )
        proc = subprocess.run(
            [sys.executable, "-S", "-c", code],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "needs a source checkout" in lines[0], proc.stderr


def test_malmoi_eval_finds_the_checkout_from_any_folder(tmp_path):
    """The editable install maps only the wheel's packages: from another folder ``eval`` is not
    importable until require_checkout puts the clone's root on the path."""
    code = (
        "from malmoi.checkout import require_checkout\n"
        "require_checkout()\n"
        "import eval.denoise, eval.separation\n"
        "print(eval.__file__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == REPO / "eval" / "__init__.py"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_library_the_runtime_imports_is_declared() -> None:
    """Each third-party module a runtime module imports comes from a distribution that
    pyproject's dependencies name (rich, soxr and urllib3 were once imported undeclared)."""
    from importlib.metadata import packages_distributions

    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {
        _canonical(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0])
        for d in meta["project"]["dependencies"]
    }
    ours = set(runtime_packages()) | set(FORBIDDEN)
    imported = {
        name.split(".")[0]
        for module, path in runtime_modules().items()
        for name in imported_names(module, path)
    }
    third_party = sorted(
        m for m in imported if m and m not in sys.stdlib_module_names and m not in ours
    )
    dists = packages_distributions()
    undeclared = [
        f"{m} ({', '.join(dists.get(m, ['no distribution']))})"
        for m in third_party
        if not {_canonical(d) for d in dists.get(m, [])} & declared
    ]
    assert third_party and not undeclared, f"imported by the runtime, not declared: {undeclared}"
