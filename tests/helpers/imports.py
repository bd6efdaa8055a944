"""The files of a package that running a module executes: its import closure, found in the AST.

Every `import`/`from ... import` counts, lazy ones inside functions included, except those under
`if TYPE_CHECKING:` (never executed). Importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py`
too. A string literal naming a file beside the module (`Path(__file__).with_name("inference.py")`,
`resources.files(...).joinpath("page.html")`) counts as well: the module reads it at run time.
Empty files (a bare `__init__.py`) run nothing and are left out (DVC warns on empty dependencies).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path


def module_file(src: Path, name: str) -> Path | None:
    """src/a/b.py or src/a/b/__init__.py for module `a.b`; None when it is not under src."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(tree: ast.AST) -> Iterable[ast.AST]:
    """ast.walk without the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names.add(base)
            # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _files_named_beside(tree: ast.AST, path: Path) -> set[Path]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and 0 < len(node.value) < 200:
            value = node.value
            if "\n" in value or value.startswith("/") or ".." in value:
                continue
            candidate = path.parent / value
            if candidate.is_file() and candidate.resolve() != path.resolve():
                found.add(candidate)
    return found


def import_closure(src: Path, roots: Iterable[str], package: str = "reviewpipe") -> set[Path]:
    """Files under `src/<package>` that importing `roots` executes or reads (see the module doc)."""
    src = src.resolve()
    seen_modules: set[str] = set()
    files: set[Path] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen_modules or not (name == package or name.startswith(package + ".")):
            continue
        seen_modules.add(name)
        # Importing a.b.c first runs a/__init__.py and a/b/__init__.py.
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        path = module_file(src, name)
        if path is None:
            continue  # `from pkg import function`: the name is not a module
        if path.stat().st_size:
            files.add(path)
        imported, beside = _scan(path, name)
        todo.extend(imported)
        for extra in beside:
            files.add(extra)
            if extra.suffix == ".py":
                todo.append(".".join(extra.relative_to(src).with_suffix("").parts))
    return files


@cache
def _scan(path: Path, name: str) -> tuple[frozenset[str], frozenset[Path]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return frozenset(_imported_names(tree, name, path.name == "__init__.py")), frozenset(
        _files_named_beside(tree, path)
    )
