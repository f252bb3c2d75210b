"""The layout's rules, read statically from the source (``ast``): the wings' one-way dependency rule, the torch-free
wings, and no imports of another module's ``_private`` names.

Dependency rule (ARCHITECTURE.md): settings ← progress ← {core, store, data} ← {stages, report} ← studies ← cli. A
module may import its own wing and the wings below it; wings on one level do not import each other. Every import
counts, function-level ones included. ``smvi/__init__.py`` (the lazy public API, which names every wing) is exempt.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "smvi"

LEVEL = {
    "settings": 0,
    "progress": 1,
    "core": 2,
    "store": 2,
    "data": 2,
    "stages": 3,
    "report": 3,
    "studies": 4,
    "cli": 5,
}
TORCH_FREE = ("settings", "store", "report")  # checked with every smvi module they import, progress included
TORCH_FREE_EXCEPTIONS = {"smvi.store.checkpoint"}  # the checkpoint reads and writes tensors
# (importer, imported) pairs that break the dependency rule and wait for a larger move, each with a comment saying
# why. None today: add one only with the lead's agreement.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def wing(module: str) -> str:
    """The subpackage holding ``module``; ``smvi.progress`` is a wing of one module, ``python -m smvi`` is the CLI."""
    return "cli" if module == "smvi.__main__" else module.split(".")[1]


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported from it, line) for every import statement of ``module``, at any depth;
    relative imports resolved."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [a.name for a in node.names if f"{target}.{a.name}" in MODULES]
            found += [(f"{target}.{s}", [], node.lineno) for s in subs]
            names = [a.name for a in node.names if a.name not in subs]
            if names:
                found.append((target, names, node.lineno))
    return found


CHECKED = sorted(m for m in MODULES if m != "smvi")


def test_every_module_is_in_a_wing():
    assert {wing(m) for m in CHECKED} <= set(LEVEL), "a new wing: give it a level in LEVEL and in ARCHITECTURE.md"


@pytest.mark.parametrize("module", CHECKED)
def test_a_module_imports_only_its_wing_and_the_wings_below(module):
    own = wing(module)
    bad = [
        f"line {line}: {target}"
        for target, _, line in imports(module)
        if target.startswith("smvi.")
        and wing(target) != own
        and LEVEL[wing(target)] >= LEVEL[own]
        and (module, target) not in KNOWN_EXCEPTIONS
    ]
    assert not bad, f"{module} ({own}) imports upward or sideways: {bad}"


@pytest.mark.parametrize("module", [m for m in CHECKED if wing(m) in TORCH_FREE and m not in TORCH_FREE_EXCEPTIONS])
def test_the_torch_free_wings_import_no_torch(module):
    """Statically, function-level imports included, and through the smvi modules they import."""
    seen, todo, chain = set(), [module], {module: module}
    while todo:
        m = todo.pop()
        for target, _, line in imports(m):
            assert target.split(".")[0] != "torch", f"{chain[m]} imports torch ({m}, line {line})"
            if target in MODULES and target != "smvi" and target not in seen:
                seen.add(target)
                chain[target] = f"{chain[m]} -> {target}"
                todo.append(target)


def test_torch_free_modules_leave_torch_unimported():
    code = (
        "import sys, smvi.report.page, smvi.store.rundir, smvi.settings.run, smvi.settings.stages; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", CHECKED)
def test_no_module_imports_another_modules_private_names(module):
    bad = [
        f"line {line}: {target}.{n}"
        for target, names, line in imports(module)
        if target != module and target.startswith("smvi")
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not bad, f"{module} imports private names (make them public with a docstring, or move them): {bad}"
