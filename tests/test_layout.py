"""The package's layout, read from its imports (``ast``), so that the boundaries cannot drift.

Subpackages import one way, down this list (same rank: may import each other):

    errors, classes  <-  storage/  <-  data/  <-  train/, models/, scoring/  <-  search/
      <-  report/  <-  refit/  <-  ray_layer/  <-  cli/

``ray`` is imported only in ``ray_layer/``, ``pyarrow.fs`` only in ``storage/``; the search and
scoring code the driver runs before any trial starts does not load torch; no import cycles.
"""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpa_tune"

RANKS = {
    "": 0,  # hpa_tune/__init__, errors, classes, _moved
    "resources": 0,
    "storage": 1,
    "data": 2,
    "train": 3,
    "models": 3,
    "scoring": 3,
    "search": 4,
    "report": 5,
    "refit": 6,
    "ray_layer": 7,
    "cli": 8,
}

# Imports that still run up the layers, each to be removed by the change named beside it.
UPWARD_ALLOWED: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, *, top_level_only: bool = False) -> set[str]:
    """Absolute names ``name`` imports (``from a import b`` gives ``a.b`` when that is a module
    of ours, else ``a``); with ``top_level_only``, only what runs when it is imported."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also the bodies of module-level try/if blocks
        nodes = [n for stmt in tree.body for n in ast.walk(stmt) if not _in_def(stmt, n)]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    return found


def _in_def(stmt: ast.stmt, node: ast.AST) -> bool:
    """Whether ``node`` (inside ``stmt``) sits in a function body: imported only when called."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return True
    if isinstance(stmt, ast.ClassDef):
        return any(
            node in ast.walk(item)
            for item in stmt.body
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
        )
    return False


def _subpackage(name: str) -> str:
    """``hpa_tune.search.space`` -> ``search``; top-level modules (``errors``) -> ``""``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


def _ours(names: set[str]) -> set[str]:
    return {n for n in names if n == "hpa_tune" or n.startswith("hpa_tune.")}


def test_every_subpackage_has_a_rank():
    assert {_subpackage(n) for n in MODULES} <= set(RANKS)


def test_ray_is_imported_only_in_the_ray_layer():
    users = {
        name for name in MODULES if any(i == "ray" or i.startswith("ray.") for i in _imports(name))
    }
    assert users, "the test reads no imports"
    assert {u for u in users if _subpackage(u) != "ray_layer"} == set()


def test_pyarrow_fs_is_imported_only_in_storage():
    users = {name for name in MODULES if any(i.startswith("pyarrow.fs") for i in _imports(name))}
    assert users
    assert {u for u in users if _subpackage(u) != "storage"} == set()


def test_imports_run_down_the_layers():
    upward = {
        (name, target)
        for name in MODULES
        for target in _ours(_imports(name))
        if target in MODULES and RANKS[_subpackage(target)] > RANKS[_subpackage(name)]
    }
    assert upward == UPWARD_ALLOWED


def test_no_import_cycles():
    graph = {name: _ours(_imports(name, top_level_only=True)) & set(MODULES) for name in MODULES}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycle = [*stack[stack.index(name) :], name]
            # A package importing its own submodules (re-exports) is no cycle of concepts.
            if not all(m == cycle[0] or m.startswith(cycle[0] + ".") for m in cycle):
                pytest.fail("import cycle: " + " -> ".join(cycle))
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*stack, name])
        done.add(name)

    for name in MODULES:
        visit(name, [])


DRIVER_PLANNING = sorted(n for n in MODULES if _subpackage(n) in {"search", "scoring"})


def test_search_and_scoring_do_not_load_torch():
    """What the driver imports to plan a search and score predictions leaves torch unloaded."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {DRIVER_PLANNING!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in ('torch', 'ray') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_experiment_file_names_are_defined_in_one_module():
    """Each file name of an experiment (``summary.csv``, ``refit/``, ``.driver``, ...) is a constant
    of ``hpa_tune.experiment_files`` and no other module's."""
    import hpa_tune.experiment_files as files

    names = {v for k, v in vars(files).items() if k.isupper() and isinstance(v, str)}
    assert "summary.csv" in names and ".driver" in names
    elsewhere = set()
    for name, path in MODULES.items():
        if name == files.__name__:
            continue
        for node in ast.parse(path.read_text()).body:
            values = []
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                value = node.value
                values = value.elts if isinstance(value, ast.Tuple) else [value]
            for v in values:
                if isinstance(v, ast.Constant) and v.value in names:
                    elsewhere.add((name, v.value))
    assert elsewhere == set()


def test_the_tensorboard_writer_does_not_import_the_data_loader():
    """Channel names are the classes module's (``classes.channel_indices``), not a torch loader's."""
    assert "hpa_tune.data.loader" not in _imports("hpa_tune.report.tensorboard_events")
