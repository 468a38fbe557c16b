"""The layering holds by imports: data flows one way, and the pure decisions stay pure.

- ``api -> runtime -> actors``, ``runtime -> storage``; ``errors`` and ``results`` are leaves any
  layer may import. ``storage`` and ``actors`` know nothing of the layers above them.
- The runtime reaches storage through the ``storage`` package's face (``Store``, ``open_store``,
  the codec), never a backend module.
- Inside the runtime, imports go down ``front -> actor -> handler -> run -> decisions``; the
  top-level modules (vocabulary, boundary, clock) are below them all.
- ``runtime/decisions`` imports neither asyncio nor storage.

Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sagaloop"
RUNTIME_RANK = {"front": 5, "actor": 4, "handler": 3, "run": 2, "decisions": 1}  # top-level modules: 0
LEAVES = {"sagaloop.errors", "sagaloop.results"}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def runtime_imports(name: str, path: Path) -> set[str]:
    """The modules ``name`` imports when it runs (not those imported for annotations only)."""
    tree = ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            # "from . import reads" names a module, not a symbol
            found.update(f"{module}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / (module + "." + alias.name).replace(".", "/")).with_suffix(".py").exists())
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


ALLOWED = {
    "sagaloop": None,  # the package's face re-exports from everywhere
    "sagaloop.testing": None,
    "sagaloop.api": {"sagaloop.api", "sagaloop.runtime"},
    "sagaloop.runtime": {"sagaloop.runtime", "sagaloop.actors", "sagaloop.storage"},
    "sagaloop.actors": {"sagaloop.actors"},
    "sagaloop.storage": {"sagaloop.storage"},
    "sagaloop.errors": set(),
    "sagaloop.results": set(),
}


@pytest.mark.parametrize("name,path", modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_flow_one_way(name, path):
    allowed = ALLOWED[layer(name)]
    if allowed is None:
        return
    ours = {m for m in runtime_imports(name, path) if m.startswith("sagaloop")}
    wrong = sorted(m for m in ours if layer(m) not in allowed and m not in LEAVES and m != "sagaloop")
    assert not wrong, f"{name} imports {wrong}: against the layering"


@pytest.mark.parametrize("name,path", [m for m in modules() if m[0].startswith("sagaloop.runtime")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_the_runtime_imports_downwards_and_storage_only_through_its_face(name, path):
    def rank(module: str) -> int:
        parts = module.split(".")
        return RUNTIME_RANK.get(parts[2], 0) if len(parts) > 2 else 0

    mine = rank(name)
    for module in runtime_imports(name, path):
        if module.startswith("sagaloop.runtime."):
            assert rank(module) <= mine, f"{name} imports {module}, which is above it"
        if module.startswith("sagaloop.storage."):
            assert module == "sagaloop.storage.codec", f"{name} imports the backend module {module}"


@pytest.mark.parametrize("name,path", [m for m in modules() if m[0].startswith("sagaloop.runtime.decisions")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_decisions_import_neither_asyncio_nor_storage(name, path):
    imported = runtime_imports(name, path)
    assert not {m for m in imported if m == "asyncio" or m.startswith(("asyncio.", "sagaloop.storage", "lmdb"))}


def test_the_rule_catches_a_back_edge(tmp_path):
    """The check is not vacuous: an import going up is seen."""
    module = tmp_path / "door.py"
    module.write_text("from ..front import door\nfrom ...api import engine\n")
    found = runtime_imports("sagaloop.runtime.run.door", module)
    assert "sagaloop.runtime.front" in found and "sagaloop.api" in found
