"""The code's layering, read from the sources: telephony uses the core, never the reverse,
and no two modules import each other (at import time)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("callbot", "telephony")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of ours imported when ``name`` is imported (not inside functions, not under
    TYPE_CHECKING)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = (package[:len(package) - node.level + 1] if node.level else [])
                mod = ".".join(base + ([node.module] if node.module else []))
                subs = {f"{mod}.{a.name}" for a in node.names} & set(modules)
                # "from . import writes" imports the submodule; the package itself is
                # already being imported
                found.update(subs or ({mod} & set(modules)))
    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    found.discard(name)
    return found


def test_the_core_never_imports_the_sip_side():
    modules = _modules()
    wrong = [(m, d) for m, p in modules.items() if m.startswith("callbot")
             for d in _imports(m, p, modules) if d.startswith("telephony")]
    assert wrong == []


def test_no_import_cycle():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    cycles = []

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen

    for m in graph:
        back = [d for d in graph[m] if m in reach(d) and not m.startswith(d + ".")]
        cycles += [(m, d) for d in back]
    assert cycles == []
