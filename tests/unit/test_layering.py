"""The layers hold in the code (ARCHITECTURE.md): edges (cli/, sdk, api/, ui/) -> service/ ->
the libraries (data/, rewards/, training/, serving/, evaluation/, models/, catalog/) -> store/.
Nothing below service/ imports an edge or the service layer, only store/ and service/ open
the store, and the libraries that are given lookups (serving/ its `Deployment`) do not import
it. Read from the source with `ast`, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "tuneloop"
LIBRARIES = ("data", "rewards", "training", "serving", "evaluation", "models", "catalog", "store")
ABOVE = ("service", "cli", "sdk", "api", "ui")
OPENS_STORE = ("open_store",)


def _modules(package: str):
    root = PACKAGE / package
    files = [root.with_suffix(".py")] if root.with_suffix(".py").is_file() else sorted(root.rglob("*.py"))
    for path in files:
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []


def test_libraries_do_not_import_the_service_layer_or_the_edges():
    wrong = []
    for package in LIBRARIES:
        for path, tree in _modules(package):
            for line, module, _ in _imports(tree):
                parts = module.split(".")
                if parts[0] == "tuneloop" and len(parts) > 1 and parts[1] in ABOVE:
                    wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert wrong == [], "\n".join(wrong)


def test_only_the_store_and_the_service_layer_open_the_store():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("store", "service"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, module, names in _imports(tree):
            if module.startswith("tuneloop.store") and any(n in OPENS_STORE for n in names):
                wrong.append(f"{rel}:{line} imports open_store")
    assert wrong == [], "\n".join(wrong)


# training/ holds the job's Store (a recipe's JobContext, given by the runner); the rest get lookups
NO_STORE = ("data", "rewards", "serving", "evaluation", "models", "catalog")


def test_libraries_reach_the_store_only_through_what_is_passed_in():
    """The server records what it serves through the `Deployment` it is given (the deployment
    service implements it), evaluation and rewards get lookups: nothing under these packages
    imports the store, its tables or its repository, not even to name a type."""
    wrong = []
    for package in NO_STORE:
        for path, tree in _modules(package):
            for line, module, _ in _imports(tree):
                if module == "tuneloop.store" or module.startswith("tuneloop.store."):
                    wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert wrong == [], "\n".join(wrong)
