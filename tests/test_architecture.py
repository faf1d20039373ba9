"""The layering and size rules of ARCHITECTURE.md, checked on the source tree (issue 10's checks 1,
3, 6 and 7): front ends reach storage only through the application core; the core never imports
Discord; ``model/`` and ``recsys/`` import nothing of ``campfire`` but its config, nor each other, nor
``bot``; ``bench/`` imports nothing from ``tests``; no module over 400 lines, no function over 80."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "model", "recsys", "campfire")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved to their package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_front_ends_reach_storage_only_through_features():
    pattern = re.compile(r"recsys\.store|\bItem\(|\.store\.")
    files = sources("bot") + [ROOT / "campfire" / "console.py"]  # as `grep -rnE PATTERN bot/ campfire/console.py`
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == [], "front ends must call campfire.features, not the store:\n" + "\n".join(hits)


def test_the_application_core_never_imports_discord():
    modules = sorted(f"campfire.features.{p.stem}" for p in (ROOT / "campfire" / "features").glob("*.py") if p.stem != "__init__")
    assert modules, "campfire/features has no modules"
    code = f"import sys, campfire.features, campfire.app\nfor m in {modules!r}: __import__(m)\n" \
           "assert 'discord' not in sys.modules, 'discord was imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_and_functions_are_small(package: str):
    too_big = []
    for path in sources(package):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n") + (not text.endswith("\n") and bool(text))
        if lines > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(ROOT)}: {lines} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(): {length} lines (max {MAX_FUNCTION_LINES})")
    assert too_big == [], "\n".join(too_big)


@pytest.mark.parametrize(("package", "forbidden"), [
    ("model", ("bot", "recsys", "campfire")),
    ("recsys", ("bot", "model", "campfire")),
    ("bench", ("tests",)),
])
def test_layers_import_only_downwards(package: str, forbidden: tuple[str, ...]):
    wrong = []
    for path in sources(package):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in forbidden and not (name == "campfire.config" or name.startswith("campfire.config.")):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == [], "\n".join(sorted(set(wrong)))


def test_only_bot_knows_discord():
    wrong = [f"{p.relative_to(ROOT)} imports {name}" for p in sources("model", "recsys", "campfire")
             for name in imported_modules(p) if name.split(".")[0] == "discord"]
    assert wrong == [], "\n".join(wrong)
