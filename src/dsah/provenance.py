"""Which code a stage runs: the modules of this package its script imports, directly or through others.

The walk is static and counts every import statement, at module level or inside a function, and the
package `__init__` files Python runs on the way to a module; a module's templates (templates/<module>.*
beside it: evaluation/templates/report.html is report.py's page) count as its code. It gives dvc.yaml's
code dependencies (checked both ways by tests/test_dvc_deps.py) and the code digest a training checkpoint
carries, so a resume after a code change starts afresh.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "dsah"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(name: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The file of module `name` (dsah.x.y) in the package, or None when it is not one (a class, say)."""
    parts = name.split(".")
    if parts[0] != package_dir.name:
        return None
    path = package_dir.joinpath(*parts[1:])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file() and len(parts) > 1:
        return path.with_suffix(".py")
    return None


def imported_names(path: Path, package: str) -> set[str]:
    """Every module name an import statement in `path` may load (for `from m import x`: m and m.x, as x
    may be a submodule). package: the package `path` belongs to, for relative imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def import_closure(script: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The package's files that running `script` can execute, and their templates, sorted (the script itself
    excluded)."""
    seen: set[Path] = set()
    todo: list[tuple[Path, str]] = [(Path(script), "")]
    while todo:
        path, package = todo.pop()
        for name in imported_names(path, package):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
                prefix = ".".join(parts[:depth])
                found = module_file(prefix, package_dir)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append((found, prefix if found.name == "__init__.py" else prefix.rpartition(".")[0]))
    templates = {t for module in seen for t in module.parent.glob(f"templates/{module.stem}.*")}
    return sorted(seen | templates)


def relative_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """'dsah/x/y.py' for a package file, the file name otherwise: the same on every machine."""
    path = Path(path).resolve()
    if path.is_relative_to(package_dir):
        return path.relative_to(package_dir.parent).as_posix()
    return f"{path.parent.name}/{path.name}"


def code_digests(script: Path, package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """sha256 of the script and of every package file it runs, by relative name."""
    files = [Path(script), *import_closure(script, package_dir)]
    return {relative_name(f, package_dir): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
