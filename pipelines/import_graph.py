"""Which project modules a script runs, read from the source (an AST walk: nothing is imported or run).

A module refers to another project module by
- an ``import`` or ``from ... import`` anywhere in its file: at module level, inside a function, inside
  ``try/except ImportError`` (relative imports resolved against the module's package);
- a string constant that is exactly the dotted name of a project module, the way code names a module it
  reads files of without importing it (``importlib.resources.files("edge.assets")``,
  ``importlib.util.find_spec("inference.inference")``).

Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so those belong to the closure.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection
from pathlib import Path

IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError"})
DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def catches_import_error(node: ast.Try | ast.TryStar) -> bool:
    """A try whose handler catches ImportError: what it imports is optional (the code has a fallback)."""
    caught: set[str | None] = set()
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        caught.update(getattr(t, "id", None) for t in types)
    return bool(caught & IMPORT_ERRORS)


def module_name(path: Path, root: Path) -> str:
    """``root/a/b.py`` -> ``a.b``; ``root/a/__init__.py`` -> ``a``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, path: Path, root: Path | None) -> str | None:
    """The module a ``from`` import names, relative ones resolved (None when it cannot be)."""
    if node.level == 0:
        return node.module
    if root is None:
        return None
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    if node.level - 1 > len(package):
        return None
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])]) or None


def imported_names(path: Path, root: Path | None = None, *, optional: bool = True) -> set[str]:
    """Dotted names the module at ``path`` imports (``from m import x`` gives ``m`` and ``m.x``).

    ``optional=False`` leaves out what is imported inside ``try: ... except ImportError``. ``root`` (the
    folder holding the top-level packages) lets relative imports be resolved.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if not optional and isinstance(node, ast.Try | ast.TryStar) and catches_import_error(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (module := _absolute(node, path, root)):
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), None if none."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_files(name: str, root: Path) -> list[Path]:
    """The files ``import name`` runs: each package's ``__init__.py`` on the way, then the module.

    A trailing attribute (``edge.frames.FrameSpec``) stops the walk at the module that defines it.
    """
    parts, files = name.split("."), []
    for end in range(1, len(parts) + 1):
        found = module_file(".".join(parts[:end]), root)
        if found is not None:
            files.append(found)
        elif not root.joinpath(*parts[:end]).is_dir():  # neither a module nor a namespace package
            break
        if found is not None and found.name != "__init__.py":
            break
    return files


def module_references(path: Path, root: Path, packages: Collection[str]) -> set[str]:
    """String constants in the module that are exactly the dotted name of a module under ``packages``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and DOTTED_NAME.fullmatch(node.value)
        and node.value.split(".")[0] in packages
        and module_file(node.value, root) is not None
    }


def project_modules(
    entry: Path, root: Path, packages: Collection[str], *, optional: bool = True
) -> list[Path]:
    """Every module file under ``packages`` that running ``entry`` may import, ``entry`` included, sorted.

    ``optional=False`` does not follow imports inside ``try: ... except ImportError``.
    """
    seen: set[Path] = set()
    todo = [entry.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = imported_names(path, root, optional=optional) | module_references(path, root, packages)
        for name in sorted(names):
            if name.split(".")[0] in packages:
                todo.extend(p.resolve() for p in module_files(name, root))
    return sorted(seen)
