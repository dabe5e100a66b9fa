"""The package's shape is a rule, not a habit: which side of the process line imports what.

Only rbridge/worker/ may import rpy2; nothing outside rbridge/worker/ imports rbridge.worker
(the gateway starts workers as `python -m rbridge.worker`, never imports them); no module
reaches into another module's private names; there are no import circles between modules.
The static checks read the source with `ast`; one check also imports the gateway for real.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rbridge"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            found.append((base, [a.name for a in node.names], node.lineno))
    return found


MODULES = _modules()


def test_only_the_worker_imports_rpy2():
    offenders = [f"{name}:{line}" for name, path in MODULES.items() if not name.startswith("rbridge.worker")
                 for mod, _, line in _imports(name, path) if mod.split(".")[0] == "rpy2"]
    assert not offenders, offenders


def test_nothing_outside_the_worker_imports_it():
    offenders = [f"{name}:{line} imports {mod}" for name, path in MODULES.items()
                 if not name.startswith("rbridge.worker")
                 for mod, names, line in _imports(name, path)
                 if mod.startswith("rbridge.worker") or (mod == "rbridge" and "worker" in names)]
    assert not offenders, offenders


def test_no_module_takes_another_modules_private_names():
    offenders = [f"{name}:{line} takes {mod}.{n}" for name, path in MODULES.items()
                 for mod, names, line in _imports(name, path) if mod.startswith("rbridge")
                 for n in names if n.startswith("_") and n != "__version__"]
    assert not offenders, offenders


def test_no_import_circles():
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for mod, names, _ in _imports(name, path):
            for target in [f"{mod}.{n}" for n in names] + [mod]:
                if target in MODULES and target != name:
                    deps.add(target)
                    break
        graph[name] = deps
    cycles = []

    def visit(node, trail):
        for dep in graph[node]:
            if dep in trail:
                cycles.append(" -> ".join(trail[trail.index(dep):] + [dep]))
            elif len(trail) < 12:
                visit(dep, trail + [dep])
    for start in graph:
        visit(start, [start])
    assert not cycles, sorted(set(cycles))[:5]


def test_every_subpackage_says_which_process_runs_it():
    for sub in ("gateway", "pool", "worker", "models", "server"):
        doc = ast.get_docstring(ast.parse((PACKAGE / sub / "__init__.py").read_text())) or ""
        assert "process" in doc.lower() and "import" in doc.lower(), sub


def test_the_gateway_never_imports_rpy2_when_it_runs():
    code = ("import sys, rbridge.server, rbridge.gateway.app, rbridge.pool.pool, rbridge.models.reload,"
            " rbridge.cli, rbridge.schema;"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('rpy2')}"
            " | {m for m in sys.modules if m.startswith('rbridge.worker')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
