"""The package's layering, read from its source: every import arrow points down (no import
circle, function-level imports included) and no module takes a private name (``_x``) or a
private module from another package. Plain Python: the files are parsed with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "vgg"


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted((SRC / PKG).rglob("*.py")):
        mod = ".".join(p.relative_to(SRC).with_suffix("").parts)
        if mod.endswith(".__init__"):
            mod = mod[: -len(".__init__")]
        out[mod] = p
    return out


MODULES = _modules()


def _is_pkg(mod: str) -> bool:
    return MODULES.get(mod, Path()).name == "__init__.py"


def _package_of(mod: str) -> str:
    return mod if _is_pkg(mod) else mod.rpartition(".")[0]


def _absolute(mod: str, module: str | None, level: int) -> str:
    if not level:
        return module or ""
    parts = _package_of(mod).split(".")
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def _reexports(pkg: str) -> dict[str, str]:
    """name -> the module a package's ``__init__`` takes it from."""
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(MODULES[pkg].read_text())):
        if isinstance(node, ast.ImportFrom):
            src = _absolute(pkg, node.module, node.level)
            for a in node.names:
                out[a.asname or a.name] = f"{src}.{a.name}" if f"{src}.{a.name}" in MODULES \
                    else src
    return out


def _defining_module(target: str, name: str | None) -> str:
    """The module that holds ``name`` imported from ``target`` (a package's re-export is
    followed to the submodule that defines it)."""
    if name and f"{target}.{name}" in MODULES:
        return f"{target}.{name}"
    seen = set()
    while name and _is_pkg(target) and target not in seen:
        seen.add(target)
        nxt = _reexports(target).get(name)
        if nxt is None or nxt == target:
            break
        target = nxt
    return target


def _imports(mod: str) -> list[tuple[str, str | None, int]]:
    """(module imported from, name or None, line) for every import in ``mod``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(MODULES[mod].read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            src = _absolute(mod, node.module, node.level)
            out += [(src, a.name, node.lineno) for a in node.names]
    return [t for t in out if t[0] == PKG or t[0].startswith(PKG + ".")]


def import_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        if path.name == "__init__.py":
            continue  # a face that only hands names on adds no arrow of its own
        for target, name, _ in _imports(mod):
            t = _defining_module(target, name)
            if t in MODULES and t != mod and not _is_pkg(t):
                edges[mod].add(t)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))
    return comps


def private_imports() -> list[str]:
    """Imports of a private name or module of another package."""
    bad = []
    for mod in MODULES:
        here = _package_of(mod)
        for target, name, line in _imports(mod):
            t = _defining_module(target, name)
            private_module = any(p.startswith("_") and not p.startswith("__")
                                 for p in t.split("."))
            private_name = bool(name) and name.startswith("_") and not name.startswith("__") \
                and f"{target}.{name}" not in MODULES
            if (private_name or private_module) and _package_of(t) != here:
                bad.append(f"{MODULES[mod].relative_to(SRC)}:{line} imports "
                           f"{name or t} from {t}")
    return bad


def test_the_graph_is_read() -> None:
    edges = import_graph()
    assert len(MODULES) > 50
    # a few arrows everyone agrees on, so an empty graph cannot pass
    assert "vgg.archs" in edges["vgg.layers"] and "vgg.layers" in edges["vgg.model"]
    assert any(t.startswith("vgg.data") for t in edges["vgg.train.loop"])


def test_no_import_circles() -> None:
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_private_names_across_packages() -> None:
    bad = private_imports()
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("edges,expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
])
def test_circle_finder(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert circles(edges) == expected
