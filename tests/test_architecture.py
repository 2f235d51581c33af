"""The package's import graph: no circles inside distillgan/, and no module uses another module's private names.

Read from the source with ``ast``, nothing imported: every ``import`` counts, at the top of a
module or inside a function (a function-level import that closes a circle is a circle all the
same; it only moves the failure to run time). A private name is one that starts with ``_`` and
is not a dunder; using one across modules — ``from .x import _y`` or ``x._y`` on an imported
module — is refused, so a helper two modules share is public in the module where it lives.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "distillgan"

# Private names that may still cross a module boundary, as (importing module, imported module, name).
# Empty: nothing imports a private name of distillgan.pickled, the one module this check's first
# change could not edit; an entry added here needs the same reason, and goes when it can.
ALLOWED_PRIVATE: frozenset[tuple[str, str, str]] = frozenset()


@dataclass
class Graph:
    edges: dict[str, set[str]] = field(default_factory=dict)
    private: list[tuple[str, str, str, int]] = field(default_factory=list)  # (importer, module, name, line)


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``root`` (a package's ``__init__`` is the package)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _base(module: str, path: Path, level: int, target: str | None) -> str:
    """The absolute name ``from <level dots><target>`` refers to inside ``module``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{target}" if target else package


def import_graph(root: Path = PACKAGE) -> Graph:
    """The modules of the package under ``root``, what each imports of it, and the private names used across modules."""
    modules = _modules(root)
    graph = Graph()
    for module, path in modules.items():
        graph.edges[module] = _scan(module, path, modules, graph.private)
    return graph


def _scan(module: str, path: Path, modules: dict[str, Path], private: list[tuple[str, str, str, int]]) -> set[str]:
    """What ``module`` imports of the package; appends the private names it uses of other modules to ``private``."""
    top = module.partition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    deps: set[str] = set()
    aliases: dict[str, str] = {}  # local name -> module of the package it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _base(module, path, node.level, node.module) if node.level else (node.module or "")
            if target != top and not target.startswith(top + "."):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in modules:  # from package import submodule
                    deps.add(sub)
                    aliases[a.asname or a.name] = sub
                elif target in modules:
                    deps.add(target)
                    if _is_private(a.name) and target != module:
                        private.append((module, target, a.name, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == top or a.name.startswith(top + "."):
                    deps.add(a.name if a.name in modules else top)
                    aliases[a.asname or top] = a.name if a.asname else top

    def resolve(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return aliases.get(expr.id)
        if isinstance(expr, ast.Attribute):
            owner = resolve(expr.value)
            if owner is not None and f"{owner}.{expr.attr}" in modules:
                return f"{owner}.{expr.attr}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = resolve(node.value)
            if owner is not None and owner != module:
                private.append((module, owner, node.attr, node.lineno))
    deps.discard(module)
    return deps


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_inside_the_package() -> None:
    graph = import_graph()
    assert len(graph.edges) > 15 and "distillgan.archive" in graph.edges["distillgan"]  # it reads the real package
    assert circles(graph.edges) == []


def test_no_module_uses_another_modules_private_names() -> None:
    found = [(m, t, n, line) for m, t, n, line in import_graph().private if (m, t, n) not in ALLOWED_PRIVATE]
    assert found == [], "\n".join(f"{m} line {line}: {t}.{n}" for m, t, n, line in found)


# --- the check itself finds what it must ---------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "distillgan"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_check_finds_a_circle_closed_by_a_function_level_import(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import thing\n",
        "b.py": "def thing():\n    from . import c\n    return c\n",
        "c.py": "import distillgan.a\n",
        "d.py": "from . import a\n",
    })
    assert circles(import_graph(root).edges) == [["distillgan.a", "distillgan.b", "distillgan.c"]]


def test_the_check_finds_private_names_imported_or_used_as_attributes(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "_SECRET = 1\n__version__ = '1'\ndef _helper():\n    return _SECRET\n",
        "b.py": "from .a import _helper, __version__\nfrom . import a as x\nVALUE = x._SECRET\n",
        "c.py": "import distillgan.a\n\ndef f():\n    return distillgan.a._helper()\n",
        "sub/__init__.py": "",
        "sub/d.py": "from ..a import _SECRET\n",
    })
    found = sorted((m, t, n) for m, t, n, _ in import_graph(root).private)
    assert found == [
        ("distillgan.b", "distillgan.a", "_SECRET"),
        ("distillgan.b", "distillgan.a", "_helper"),
        ("distillgan.c", "distillgan.a", "_helper"),
        ("distillgan.sub.d", "distillgan.a", "_SECRET"),
    ]
    assert circles(import_graph(root).edges) == []
