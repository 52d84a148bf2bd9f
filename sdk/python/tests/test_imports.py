"""The SDK's modules import each other without cycles.

Every import counts, wherever it is written: at the top, inside a function, or under
``if TYPE_CHECKING:`` (a cycle there is a cycle in how a reader has to understand the code).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "runegrid"


def modules() -> dict[str, Path]:
    return {f.stem: f for f in sorted(PACKAGE.glob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "runegrid":
                    continue
                parts = parts[1:]
            elif node.level == 1:
                parts = (node.module or "").split(".") if node.module else []
            else:
                raise AssertionError(f"{name}: relative import above the package")
            if parts:
                out.add(parts[0])
            else:  # `from . import x`: x is a module, or a name of __init__
                out.update(a.name if a.name in known else "__init__" for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "runegrid":
                    out.add(parts[1] if len(parts) > 1 else "__init__")
    out.discard(name)
    return out & known


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m) :] + [m]
            if m not in state and (c := visit(m)) is not None:
                return c
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)) is not None:
            return c
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_every_kind_of_import() -> None:
    g = import_graph()
    # `from . import x as y` (_protocol) and `from .x import y` (options) lines
    assert {"_protocol", "options"} <= g["calls"], g["calls"]
    # a function-local import (bench imports local inside main)
    assert "local" in g["bench"], g["bench"]


def test_modules_import_each_other_without_cycles() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_job_client_is_below_its_users() -> None:
    graph = import_graph()
    assert not graph["_jobs"] & {"grid", "calls", "chat"}, graph["_jobs"]
    for user in ("grid", "calls", "chat"):
        assert "_jobs" in graph[user], user
    assert "grid" not in graph["calls"] and "grid" not in graph["chat"]
