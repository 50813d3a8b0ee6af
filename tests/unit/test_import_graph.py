"""The layering a reader would check, kept as tests over the import graph (read from the source, nothing imported):
the kernel imports no daemon package, no daemon package imports another (nor the tools, the testbed or the test
harness), and no module imports itself back in a circle of module-level imports."""

from __future__ import annotations

import ast
from pathlib import Path

from harness.paths import REPO

DAEMONS = ("edge_server", "device_client", "controller", "linkemu")
KERNEL = "tandem"
ABOVE_THE_DAEMONS = ("testbed", "toolbox", "harness", "bench", "tests")  # orchestration, tools, tests
PACKAGES = (KERNEL, *DAEMONS, "testbed", "toolbox", "harness")


def modules() -> dict[str, Path]:
    """Every first-party module by dotted name (the generated wire stubs left out)."""
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            if "wire" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(path: Path, module_level_only: bool = False) -> set[str]:
    """Dotted names ``path`` imports (``from a.b import c`` gives a.b and a.b.c); ``module_level_only``: those run
    when the module is imported (not inside functions, nor under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if not module_level_only else _module_level(tree.body)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _module_level(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.If, ast.Try)):
            yield from _module_level(node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_kernel_imports_no_daemon_and_nothing_above_it():
    offenders = {f"{name} imports {other}" for name, path in modules().items() if top(name) == KERNEL
                 for other in imported(path) if top(other) in (*DAEMONS, *ABOVE_THE_DAEMONS)}
    assert not offenders, sorted(offenders)


def test_no_daemon_package_imports_another_daemon_or_the_tools_testbed_and_tests():
    offenders = {f"{name} imports {other}" for name, path in modules().items() if top(name) in DAEMONS
                 for other in imported(path)
                 if top(other) in (*DAEMONS, *ABOVE_THE_DAEMONS) and top(other) != top(name)}
    assert not offenders, sorted(offenders)


def test_no_circle_of_module_level_imports():
    known = modules()
    graph = {name: {other for other in imported(path, module_level_only=True) if other in known and other != name}
             for name, path in known.items()}
    circles, done, path = [], set(), []

    def visit(name: str) -> None:
        if name in path:
            circles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        path.append(name)
        for other in sorted(graph[name]):
            visit(other)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert not circles, [" -> ".join(circle) for circle in circles]


def test_the_checks_see_the_graph_they_claim_to_check():
    """The reader finds the packages and their imports (an empty graph would pass every check above)."""
    known = modules()
    assert {"tandem.cli", "edge_server.server", "device_client.decoding", "controller.loop", "linkemu.emulator"} \
        <= set(known)
    assert "tandem.daemon" in imported(known["edge_server.server"], module_level_only=True)
