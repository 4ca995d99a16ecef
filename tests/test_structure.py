"""The shape the code keeps (issue 9): the life-cycle rules in one file, files short enough to read at once,
no import cycle in the library.

No server module spells a state name as a string of its own: a state written as "running" elsewhere
silently stops matching when the enum changes; written as `State.RUNNING` it is found by every search and
fails at import. api/schemas.py may name them (it declares the contract the API publishes); the client
package (mcu_client/) and the CLI built on it speak HTTP and keep their own copy.
"""

from __future__ import annotations

import ast
from pathlib import Path

from domain.lifecycle import State

ROOT = Path(__file__).resolve().parents[1]
SERVER_PACKAGES = ("api", "domain", "models", "storage", "worker", "settings")
OWNERS = {ROOT / "domain" / "lifecycle.py", ROOT / "api" / "schemas.py"}


def state_literals(path: Path) -> list[str]:
    names = {state.value for state in State}
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant) and node.value in names
    ]


def test_no_state_name_is_spelled_outside_the_lifecycle_module() -> None:
    files = [
        path for package in SERVER_PACKAGES for path in sorted((ROOT / package).rglob("*.py")) if path not in OWNERS
    ]
    assert len(files) > 40  # the walk found the server's modules
    found = [hit for path in files for hit in state_literals(path)]
    assert not found, found


def test_the_check_sees_a_literal() -> None:
    sample = ROOT / "domain" / "lifecycle.py"
    assert any("'running'" in hit for hit in state_literals(sample))


def test_no_api_or_worker_module_is_over_250_lines() -> None:
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for package in ("api", "worker")
        for path in (ROOT / package).rglob("*.py")
    }
    assert len(lengths) > 20
    assert {name: n for name, n in lengths.items() if n > 250} == {}


def unlearning_imports() -> dict[str, set[str]]:
    """Module → the unlearning modules it imports, anywhere in its body (function-level imports too)."""
    graph = {}
    for path in (ROOT / "unlearning").glob("*.py"):
        name, found = f"unlearning.{path.stem}", set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unlearning."):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("unlearning.")}
        graph[name] = found - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_library_has_no_import_cycle() -> None:
    graph = unlearning_imports()  # the package's __init__ imports its modules lazily and is left out
    assert len(graph) > 8
    graph.pop("unlearning.__init__")
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]  # and the search finds one
