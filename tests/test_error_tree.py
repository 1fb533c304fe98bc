"""One error tree: every exception prov defines or raises is in the tree drawn in errors.py.

Read with ast over provisioner/, pricing/ and stacks/ (nothing is imported). A class that
subclasses an exception must reach ProvError, or be one of the control-flow classes errors.py
lists. A ``raise`` must name a class of the tree, a function returning one, an exception
caught in the same function, or a standard exception on the short list below, with its reason
(a variable raised is followed to the call that made it).
"""

from __future__ import annotations

import ast
import builtins
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import provisioner.errors

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("provisioner", "pricing", "stacks")

# Standard (or library) exceptions raised on purpose: (file or folder prefix, name) -> why.
ALLOWED: dict[tuple[str, str], str] = {
    ("provisioner/cli/", "Exit"): "typer.Exit: the CLI boundary ends the process with a code",
    ("provisioner/cli/fit.py", "AssertionError"): "unreachable: _usage() always raises",
    ("provisioner/contract/document.py", "ValueError"): (
        "pydantic validators report a bad field with ValueError; read_plan turns the "
        "ValidationError into a UsageError"
    ),
    ("provisioner/core/catalog.py", "ValueError"): (
        "json.loads' parse_constant hook; load_json_text turns it into a ConfigError"
    ),
    ("provisioner/daemon/kube.py", "LookupError"): (
        "a node gone mid-flow: the step's retry logs it and the handler records the error"
    ),
    ("provisioner/daemon/fakes/kube.py", "LookupError"): (
        "the fake raises what kube.KubeClient raises for a node gone; a missing lease (404)"
    ),
    ("pricing/live_refresh.py", "ValueError"): "a bug: callers pass only the clouds dispatched",
    ("stacks/vllm_service.py", "ValueError"): "a bug: every manifest kind built has a resource",
    ("stacks/weights_fill.py", "ValueError"): (
        "a bug: stacks/spec.py refuses --fill-weights without --weights s3 first"
    ),
}


@dataclass(frozen=True)
class ClassInfo:
    module: str
    bases: tuple[str, ...]


@functools.cache
def _parsed() -> dict[str, ast.Module]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[p.relative_to(ROOT).as_posix()] = ast.parse(p.read_text("utf-8"))
    return out


def _files() -> dict[str, ast.Module]:
    return dict(_parsed())


def _module(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _last(node: ast.expr) -> str:
    """The name an expression ends in: ``errors.DataError`` -> ``DataError``."""
    if isinstance(node, ast.Call):
        return _last(node.func)
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ast.unparse(node)


def _builtin_exception(name: str) -> type[BaseException] | None:
    obj = getattr(builtins, name, None)
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def exception_classes(files: dict[str, ast.Module]) -> dict[str, ClassInfo]:
    """Every class defined in the packages that is an exception, by name."""
    classes: dict[str, list[ClassInfo]] = {}
    for path, tree in files.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                info = ClassInfo(_module(path), tuple(_last(b) for b in node.bases))
                classes.setdefault(node.name, []).append(info)

    def is_exc(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if _builtin_exception(name):
            return True
        if name in seen or name not in classes:
            return False
        return any(is_exc(b, seen | {name}) for info in classes[name] for b in info.bases)

    out = {}
    for name, infos in classes.items():
        excs = [i for i in infos if any(is_exc(b) for b in i.bases)]
        assert len(excs) <= 1, f"two exception classes named {name}: {excs}"
        if excs:
            out[name] = excs[0]
    return out


def in_tree(name: str, classes: dict[str, ClassInfo]) -> bool:
    while name in classes:
        if name == "ProvError":
            return True
        bases = [b for b in classes[name].bases if b in classes]
        if not bases:
            return False
        name = bases[0]
    return False


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """errors.py's drawing: name -> (parent, module)."""
    doc = provisioner.errors.__doc__ or ""
    block = doc.split("The whole tree", 1)[1].split("\n\n", 2)[1]
    out: dict[str, tuple[str | None, str]] = {}
    stack: list[str] = []
    for line in block.splitlines():
        m = re.match(r"^    ([|`\- ]*?)(\w+)\s+([\w.]+)\s", line)
        assert m, f"errors.py's tree: cannot read {line!r}"
        depth = len(m.group(1)) // 4
        stack[depth:] = [m.group(2)]
        out[m.group(2)] = (stack[depth - 1] if depth else None, m.group(3))
    return out


def documented_control_flow() -> dict[str, str]:
    doc = provisioner.errors.__doc__ or ""
    block = doc.split("Not in the tree, on purpose", 1)[1].split("\n\n", 2)[1]
    return dict(re.findall(r"^    (\w+)\s+([\w.]+)\s", block, flags=re.M))


def _full(module: str, names: set[str]) -> str:
    return module if module in names else f"provisioner.{module}"


def _caught_here(raise_node: ast.Raise, name: str, parents: dict[ast.AST, ast.AST]) -> bool:
    """Raised inside a try body of the same function whose handler catches it."""
    child: ast.AST = raise_node
    node = parents.get(child)
    raised = _builtin_exception(name)
    while node is not None and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        if isinstance(node, ast.Try) and child in node.body:
            for handler in node.handlers:
                types = handler.type
                elts = types.elts if isinstance(types, ast.Tuple) else [types]
                for t in elts:
                    if t is None:
                        continue
                    caught = _last(t)
                    base = _builtin_exception(caught)
                    if caught == name or (raised and base and issubclass(raised, base)):
                        return True
        child, node = node, parents.get(node)
    return False


def _assigned_call(raise_node: ast.Raise, parents: dict[ast.AST, ast.AST]) -> ast.Call | None:
    """``error = make_error(...); raise error``: the call that made the raised variable."""
    if not isinstance(raise_node.exc, ast.Name):
        return None
    var = raise_node.exc.id
    func = parents.get(raise_node)
    while func is not None and not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
        func = parents.get(func)
    for node in ast.walk(func) if func is not None else ():
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and any(isinstance(t, ast.Name) and t.id == var for t in node.targets)
        ):
            return node.value
    return None


def violations(files: dict[str, ast.Module]) -> list[str]:
    classes = exception_classes(files)
    control = documented_control_flow()
    # function or method name -> the classes its return annotations name (None left out)
    factories: dict[str, set[str]] = {}
    for tree in files.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.returns is not None:
                names = {n.id for n in ast.walk(node.returns) if isinstance(n, ast.Name)}
                factories.setdefault(node.name, set()).update(names - {"None"})

    def made_by_factory(name: str) -> bool:
        made = factories.get(name)
        return bool(made) and all(in_tree(n, classes) for n in made or ())

    bad = []
    for name, info in sorted(classes.items()):
        if not in_tree(name, classes) and name not in control:
            bad.append(f"{info.module}: class {name}{info.bases} is outside the error tree")
    for path, tree in files.items():
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue  # a bare raise re-raises what was caught
            if not parents:
                parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
            name = _last(_assigned_call(node, parents) or node.exc)
            ok = (
                in_tree(name, classes)
                or name in control
                or made_by_factory(name)
                or any(path.startswith(where) and name == n for where, n in ALLOWED)
            )
            if not ok:
                ok = _caught_here(node, name, parents)
            if not ok:
                bad.append(f"{path}:{node.lineno}: raise {ast.unparse(node.exc)[:60]}")
    return sorted(
        bad, key=lambda line: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", line)]
    )


def test_every_exception_defined_or_raised_is_in_the_tree() -> None:
    assert violations(_files()) == []


def test_the_drawing_in_errors_py_is_the_code() -> None:
    files = _files()
    classes = exception_classes(files)
    modules = {_module(p) for p in files}
    code = {
        name: (next((b for b in info.bases if b in classes), None), info.module)
        for name, info in classes.items()
        if in_tree(name, classes)
    }
    drawn = {
        name: (parent, _full(module, modules)) for name, (parent, module) in drawn_tree().items()
    }
    assert drawn == code


def test_control_flow_classes_are_documented_and_outside_the_tree() -> None:
    files = _files()
    classes = exception_classes(files)
    modules = {_module(p) for p in files}
    control = documented_control_flow()
    assert control, "errors.py lists no control-flow classes"
    for name, module in control.items():
        assert name in classes and classes[name].module == _full(module, modules)
        assert not in_tree(name, classes)


def test_the_checker_catches_strays() -> None:
    """The checks above can fail: a stray class and stray raises in a made-up module."""
    files = _files()
    files["provisioner/core/stray.py"] = ast.parse(
        "class Oops(Exception):\n    pass\n"  # 1
        "class Fine(ConfigError):\n    pass\n"  # 3
        "def f(x):\n"  # 5
        "    if x:\n        raise RuntimeError('no')\n"  # 7
        "    try:\n        raise KeyError(x)\n    except LookupError:\n        pass\n"
        "    raise Fine('a tree class')\n"  # 12
        "def g():\n    raise ValueError('not caught here')\n"  # 14
        "def make_fine() -> Fine | None:\n    return Fine('x')\n"  # 15
        "def make_oops() -> Oops:\n    return Oops('x')\n"  # 17
        "def h():\n    err = make_fine()\n    raise err\n"  # 21
        "def k():\n    err = make_oops()\n    raise err\n"  # 24
    )
    assert violations(files) == [
        "provisioner.core.stray: class Oops('Exception',) is outside the error tree",
        "provisioner/core/stray.py:7: raise RuntimeError('no')",
        "provisioner/core/stray.py:14: raise ValueError('not caught here')",
        "provisioner/core/stray.py:24: raise err",
    ]
