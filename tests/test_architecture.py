"""The layout's import direction: commands sit above the library, and the library's layers stay apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "peterrec"

# 0.1.0 module paths kept as thin re-exports; nothing in the library may use them.
DEPRECATED_ALIASES = {
    "peterrec.backbone",
    "peterrec.patches",
    "peterrec.finetune",
    "peterrec.heads",
    "peterrec.run",
}

# A module in the first package may not import anything in the second ones.
FORBIDDEN = {
    "peterrec.model": ("peterrec.data", "peterrec.evaluation", "peterrec.tasks", "peterrec.training"),
    "peterrec.data": ("peterrec.model", "peterrec.evaluation", "peterrec.tasks", "peterrec.training"),
    "peterrec.evaluation": ("peterrec.tasks", "peterrec.training", "peterrec.runs", "peterrec.manifest"),
    "peterrec.training": ("peterrec.data", "peterrec.evaluation", "peterrec.tasks", "peterrec.runs"),
    "peterrec.tasks": ("peterrec.runs", "peterrec.manifest", "peterrec.reporting"),
}
FOUNDATION = ("peterrec.tokens", "peterrec.choices", "peterrec.errors", "peterrec.allocator")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every peterrec module a file imports, at any depth, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name.startswith("peterrec")}


def package_imports() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(imports: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the layout, as 'importer -> imported'."""
    found = []
    for importer, imported in imports.items():
        is_command = _within(importer, "peterrec.commands") or importer == "peterrec.__main__"
        for name in sorted(imported):
            if importer in DEPRECATED_ALIASES:
                continue
            if not is_command and _within(name, "peterrec.commands"):
                found.append(f"{importer} -> {name} (the library imports a command)")
            if any(_within(name, alias) for alias in DEPRECATED_ALIASES):
                found.append(f"{importer} -> {name} (a deprecated 0.1.0 alias)")
            for package, banned in FORBIDDEN.items():
                if _within(importer, package) and any(_within(name, b) for b in banned):
                    found.append(f"{importer} -> {name} ({package} may not use {name.split('.')[1]})")
            if importer in FOUNDATION and name not in ("peterrec", *FOUNDATION) and name != importer:
                found.append(f"{importer} -> {name} (a foundation module imports the library)")
    return found


def test_the_package_follows_the_import_direction():
    imports = package_imports()
    assert "peterrec.commands.cli" in imports and "peterrec.model.backbone" in imports
    assert violations(imports) == []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("peterrec.model.transfer", "peterrec.commands.finetune"),
        ("peterrec.runs", "peterrec.commands.pretrain.run_pretrain"),
        ("peterrec.data.next_item", "peterrec.evaluation.ranking"),
        ("peterrec.model.heads", "peterrec.tasks.profile"),
        ("peterrec.tasks.coldrec", "peterrec.heads"),
        ("peterrec.choices", "peterrec.model.backbone"),
    ],
)
def test_the_checker_catches_a_wrong_import(importer, imported):
    imports = package_imports()
    imports[importer] = imports[importer] | {imported}
    assert len(violations(imports)) == 1


def test_type_checking_imports_do_not_count(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from peterrec.config import X\n"
        "def f():\n    from peterrec.data import Y\n"
    )
    assert imports_of(source) == {"peterrec.data", "peterrec.data.Y"}


def test_public_api_from_the_top_level():
    import peterrec
    from peterrec import NextItNet as TopLevel
    from peterrec import PatchSwitcher, TransferModel, add_adapters, add_patches, apply_strategy, load_run
    from peterrec.metrics import hit_rate, mrr, ndcg
    from peterrec.model.backbone import NextItNet

    assert TopLevel is NextItNet and callable(add_adapters) and callable(add_patches)
    assert all(callable(x) for x in (apply_strategy, load_run, hit_rate, ndcg, mrr))
    assert (
        PatchSwitcher.__module__ == "peterrec.runs" and TransferModel.__module__ == "peterrec.model.transfer"
    )
    with pytest.raises(AttributeError):
        peterrec.NoSuchThing  # noqa: B018


def test_0_1_0_module_paths_still_work_and_warn():
    import importlib
    import sys

    for name, attr in [
        ("peterrec.backbone", "NextItNet"),
        ("peterrec.patches", "add_patches"),
        ("peterrec.finetune", "apply_strategy"),
        ("peterrec.heads", "ClassifierHead"),
        ("peterrec.run", "load_run"),
    ]:
        sys.modules.pop(name, None)
        with pytest.warns(DeprecationWarning, match=name):
            module = importlib.import_module(name)
        assert callable(getattr(module, attr))
