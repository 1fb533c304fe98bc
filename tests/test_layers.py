"""The import graph of prov's own packages: no cycles, and layers import only downward.

DESIGN.md "Layout": the pure core at the bottom (over errors/fileio/fleet), then the plan
contract and pricing, then stacks and the daemon, then the CLI on top. Imports inside
functions count too (a lazy import is still a dependency). The graph is read with ast, so the
test imports nothing it checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("provisioner", "pricing", "stacks")

# Lower number = lower layer. A module may import its own layer (no cycles) or lower ones.
LAYERS: tuple[tuple[str, int], ...] = (
    ("provisioner.errors", 0),
    ("provisioner.fileio", 0),
    ("provisioner.fleet", 0),
    ("provisioner", 0),  # the package itself: __version__
    ("provisioner.core", 1),
    ("provisioner.aws_credentials", 1),  # over errors; beside the core, which imports no SDK
    ("provisioner.contract", 2),
    ("pricing.tools", 3),
    ("pricing", 2),
    ("stacks", 4),
    ("provisioner.daemon", 4),
    ("provisioner.cli", 5),
)


def layer_of(module: str) -> tuple[str, int]:
    best = ("", -1)
    for prefix, rank in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[0]):
            best = (prefix, rank)
    assert best[1] >= 0, f"{module} is in no layer of DESIGN.md's layout"
    return best


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    up = here[: len(here) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                # the longest known module the import names (a symbol's module, or the module)
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and not (t == "provisioner" and name != "provisioner"):
                    graph[name].add(t)
                    break
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in graph.items():
        lm, rm = layer_of(m)
        for d in deps:
            ld, rd = layer_of(d)
            if rd > rm or (rd == rm and ld != lm):
                bad.append(f"{m} ({lm}) imports {d} ({ld})")
    return sorted(bad)


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_layers_import_only_downward() -> None:
    assert upward(import_graph()) == []


def test_the_core_imports_no_sdk() -> None:
    sdks = ("boto3", "botocore", "kubernetes", "pulumi", "pulumi_aws", "typer", "apscheduler")
    found = []
    for name, path in modules().items():
        if layer_of(name)[0] != "provisioner.core":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            found += [f"{name}: {n}" for n in names if n.split(".")[0] in sdks]
    assert found == []


def test_the_checker_sees_a_planted_cycle_and_an_upward_import() -> None:
    graph = {
        "provisioner.core.a": {"provisioner.core.b"},
        "provisioner.core.b": {"provisioner.core.a"},
    }
    assert cycles(graph) == [["provisioner.core.a", "provisioner.core.b"]]
    assert upward({"provisioner.core.a": {"pricing.offers"}, "pricing.offers": set()}) == [
        "provisioner.core.a (provisioner.core) imports pricing.offers (pricing)"
    ]
