"""Static layout numbers of an smvi tree (issue 24's before/after table), read with ``ast``, nothing imported.

    python scripts/layout_stats.py [ROOT]      # ROOT: a checkout of smvi (default: this one)

Prints, for ``ROOT/src/smvi``:
- modules per wing (a wing is a subpackage of ``smvi``; top-level modules are listed as ``(top level)``);
- import levels: the longest chain of imports among smvi modules (every static import, function-level ones too;
  modules in an import cycle count as one level). A module that imports no smvi module is on level 1;
- the size of ``smvi.__all__`` and the total of the other modules' ``__all__``;
- imports of another module's ``_private`` name (``from smvi.x import _y`` in a module other than ``smvi.x``);
- ``__all__`` names used nowhere else: the name appears, as a word, in no file of ``src/``, ``tests/``, ``scripts/``,
  ``benchmarks/``, ``examples/``, ``docs/`` or the top-level ``*.md`` files other than the module that lists it.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def wing(name: str, is_package: bool) -> str:
    """The subpackage of smvi that holds module ``name``; ``(top level)`` for smvi's own modules."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and is_package) else "(top level)"


def imported_modules(tree: ast.Module, name: str, is_package: bool, modules: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names imported from it) for every import statement that reaches a module of ``modules``."""
    package = name if is_package else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.append((alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in modules:
                continue
            names = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # `from smvi.core import estimators`: the submodule itself
                    found.append((sub, []))
                else:
                    names.append(alias.name)
            if names:
                found.append((target, names))
    return found


def all_names(tree: ast.Module) -> list[str]:
    """The module's ``__all__``, with ``*NAME`` expanded where NAME is a literal list, tuple or dict of the module."""
    literals: dict[str, ast.expr] = {}
    value = None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, assigned = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, assigned = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                literals[target.id] = assigned
                if target.id == "__all__":
                    value = assigned
    if value is None:
        return []

    def strings(expr: ast.expr) -> list[str]:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if isinstance(expr, (ast.List, ast.Tuple, ast.Set)):
            return [s for e in expr.elts for s in strings(e)]
        if isinstance(expr, ast.Dict):
            return [s for k in expr.keys if k is not None for s in strings(k)]
        if isinstance(expr, ast.Starred):
            return strings(expr.value)
        if isinstance(expr, ast.Name) and expr.id in literals:
            return strings(literals[expr.id])
        if isinstance(expr, ast.BinOp):
            return strings(expr.left) + strings(expr.right)
        return []

    return strings(value)


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    """Level of each module: 1 + the highest level it imports, with import cycles collapsed (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    component: dict[str, int] = {}
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component[w] = len(components)
                members.append(w)
                if w == v:
                    break
            components.append(members)

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    level: dict[int, int] = {}
    for c, members in enumerate(components):  # Tarjan emits a component after every component it reaches
        below = {component[w] for v in members for w in graph[v]} - {c}
        level[c] = 1 + max((level[b] for b in below), default=0)
    return {v: level[component[v]] for v in graph}


@dataclass
class Stats:
    modules: int
    wings: dict[str, int]
    import_levels: int
    deepest: str
    smvi_all: int
    all_total: int
    private_imports: list[str]
    unused_all: list[str]


def stats(root: Path) -> Stats:
    src = root / "src"
    files = sorted((src / "smvi").rglob("*.py"))
    trees = {module_name(p, src): (p, ast.parse(p.read_text(encoding="utf-8"))) for p in files}
    modules = set(trees)
    graph: dict[str, set[str]] = {}
    private: list[str] = []
    for name, (path, tree) in trees.items():
        edges = imported_modules(tree, name, path.name == "__init__.py", modules)
        # the package smvi itself (reached by every absolute import) is not an edge: its __init__ imports lazily
        graph[name] = {m for m, _ in edges if m not in (name, "smvi")}
        private += [
            f"{name} <- {m}.{n}"
            for m, ns in edges
            if m != name
            for n in ns
            if n.startswith("_") and not n.startswith("__")
        ]
    wings = Counter(wing(n, trees[n][0].name == "__init__.py") for n in modules)
    level = levels(graph)
    exported = {n: all_names(t) for n, (_, t) in trees.items()}

    corpus = {
        p: p.read_text(encoding="utf-8", errors="replace")
        for d in ("src", "tests", "scripts", "benchmarks", "examples", "docs")
        if (root / d).is_dir()
        for p in (root / d).rglob("*")
        if p.suffix in (".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".cfg", ".ini", ".sh") and p.is_file()
    }
    corpus.update({p: p.read_text(encoding="utf-8") for p in root.glob("*.md")})
    corpus.update({p: p.read_text(encoding="utf-8") for p in root.glob("Makefile")})
    unused = []
    for name, names in exported.items():
        own = trees[name][0]
        for n in names:
            word = re.compile(rf"(?<![\w.]){re.escape(n)}\b|(?<=\.){re.escape(n)}\b")
            if not any(word.search(text) for p, text in corpus.items() if p != own):
                unused.append(f"{name}.{n}")
    return Stats(
        modules=len(modules),
        wings=dict(sorted(wings.items())),
        import_levels=max(level.values()),
        deepest=max(level, key=lambda m: (level[m], m)),
        smvi_all=len(exported.get("smvi", [])),
        all_total=sum(len(v) for n, v in exported.items() if n != "smvi"),
        private_imports=private,
        unused_all=unused,
    )


def main(argv: list[str]) -> None:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1])
    s = stats(root)
    print(f"tree: {root}")
    print(f"modules: {s.modules}")
    print("modules per wing: " + ", ".join(f"{w} {n}" for w, n in s.wings.items()))
    print(f"import levels: {s.import_levels} (deepest: {s.deepest})")
    print(f"smvi.__all__: {s.smvi_all} names; the other modules' __all__: {s.all_total} names")
    print(f"_private imports across modules: {len(s.private_imports)}")
    for line in s.private_imports:
        print(f"  {line}")
    print(f"__all__ names used nowhere else: {len(s.unused_all)}")
    for line in s.unused_all:
        print(f"  {line}")


if __name__ == "__main__":
    main(sys.argv)
