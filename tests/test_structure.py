"""The shape the code keeps (issue 9): the life-cycle rules in one file, files short enough to read at once,
no import cycle in the library.

No server module spells a state name as a string of its own: a state written as "running" elsewhere
silently stops matching when the enum changes; written as `State.RUNNING` it is found by every search and
fails at import. api/schemas/ may name them (it declares the contract the API publishes). The client
(mcu_client/), the CLI built on it and the console read the states from `GET /v1/meta` and keep no list of
them (tests/api/test_meta.py changes the table and sees them follow).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from domain.lifecycle import State

ROOT = Path(__file__).resolve().parents[1]
SERVER_PACKAGES = ("api", "domain", "models", "storage", "worker", "settings", "telemetry")
OWNERS = {ROOT / "domain" / "lifecycle.py", *(ROOT / "api" / "schemas").glob("*.py")}


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


def state_sets() -> dict[str, frozenset[str]]:
    """The sets a client would copy: every state, the final ones, the open ones."""
    from domain.lifecycle import TRANSITIONS

    return {
        "every state": frozenset(map(str, TRANSITIONS)),
        "the final states": frozenset(str(s) for s, targets in TRANSITIONS.items() if not targets),
        "the open states": frozenset(str(s) for s, targets in TRANSITIONS.items() if targets),
    }


def state_lists(path: Path) -> list[str]:
    """Literal lists, tuples and sets of `path` (Python or JavaScript) that spell one of `state_sets()`."""
    text = path.read_text()
    if path.suffix == ".py":
        found = [
            (node.lineno, {e.value for e in node.elts if isinstance(e, ast.Constant)})
            for node in ast.walk(ast.parse(text, str(path)))
            if isinstance(node, ast.List | ast.Tuple | ast.Set)
        ]
    else:
        found = [
            (text.count("\n", 0, m.start()) + 1, set(re.findall(r"[\"']([a-z_]+)[\"']", m.group())))
            for m in re.finditer(r"\[[^\[\]]*\]", text)
        ]
    return [
        f"{path.name}:{line} {text.splitlines()[line - 1].strip()[:40]} ({name})"
        for line, values in found
        for name, states in state_sets().items()
        if values == states
    ]


def test_the_client_cli_and_console_keep_no_list_of_states() -> None:
    """They read GET /v1/meta. The one copy left is the client's offline fallback for `DeletionRequest.finished`
    (tests/api/test_meta.py checks it against the server's)."""
    files = [*sorted((ROOT / "mcu_client").glob("*.py")), ROOT / "cli" / "client_commands.py"]
    files += [ROOT / "api" / "console" / "console.js"]
    found = [hit for path in files for hit in state_lists(path)]
    assert len(found) == 1 and found[0].startswith("types.py:") and "TERMINAL_STATES = (" in found[0], found


def test_the_list_check_sees_a_copy(tmp_path: Path) -> None:
    states = sorted(state_sets()["the final states"])
    (tmp_path / "a.py").write_text(f"DONE = {tuple(states)!r}\n")
    (tmp_path / "a.js").write_text(f"const DONE = {list(states)!r};\n".replace("'", '"'))
    for name in ("a.py", "a.js"):
        hits = state_lists(tmp_path / name)
        assert len(hits) == 1 and hits[0].startswith(f"{name}:1 ") and "(the final states)" in hits[0], hits


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


def package_imports(path: Path, packages: tuple[str, ...]) -> list[str]:
    """The modules of `packages` a file imports, anywhere in its body (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return sorted(name for name in found if name.split(".")[0] in packages)


def worker_imports(path: Path) -> list[str]:
    return package_imports(path, ("worker",))


def test_domain_imports_nothing_from_the_worker() -> None:
    """The rules (domain/) sit below the worker that applies them; task names live in domain/tasks.py."""
    files = sorted((ROOT / "domain").rglob("*.py"))
    assert len(files) > 10  # the walk found the package's modules
    found = {str(path.relative_to(ROOT)): worker_imports(path) for path in files}
    assert {name: modules for name, modules in found.items() if modules} == {}


def test_the_check_sees_a_worker_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from worker import jobs\n\ndef send():\n    from worker.dispatch import Dispatcher\n")
    assert worker_imports(sample) == ["worker", "worker.dispatch"]


def test_the_benchmarks_use_only_the_public_surface() -> None:
    """bench/ drives the service as a user does: `mcu serve` / `mcu worker` processes, mcu_client or plain HTTP
    (and the library, storage and domain code directly); nothing of api/ or worker/, whose insides may change
    without a benchmark's numbers meaning something else."""
    files = sorted((ROOT / "bench").rglob("*.py"))
    assert len(files) > 8  # the walk found the benchmarks
    found = {str(path.relative_to(ROOT)): package_imports(path, ("api", "worker")) for path in files}
    assert {name: modules for name, modules in found.items() if modules} == {}


def test_the_check_sees_an_api_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import api.app as app\n\ndef run():\n    from api import deps\n    import apis, workers\n")
    assert package_imports(sample, ("api", "worker")) == ["api", "api.app"]


def test_every_mutation_applies_once_and_names_tests_that_exist() -> None:
    """`make mutate` (tests/mutate.py) proves the tests catch known faults only while its mutations fit the code:
    one whose text is gone is skipped as "cannot be applied", one whose test id is gone stops its baseline.
    Both went unnoticed for sessions as the code moved on."""
    import subprocess
    import sys

    from tests.mutate import MUTATIONS

    stale = [
        f"{mutation.name}: {old.strip()!r} occurs {count} times in {mutation.path}"
        for mutation in MUTATIONS
        for old in (mutation.old, *(old for old, _ in mutation.also))
        if (count := (ROOT / mutation.path).read_text().count(old)) != 1
    ]
    assert stale == []
    ids = sorted({test for mutation in MUTATIONS for test in mutation.tests})
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
