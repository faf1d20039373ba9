"""model/'s shape (issue 10): imports nothing from ``campfire`` but ``campfire.config``; modules ≤ 400
lines, functions ≤ 80; ``python -m model.server`` stands alone (no ``campfire.cli``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = sorted((ROOT / "model").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_model_imports_only_campfire_config_from_campfire():
    bad = {f"{p.name}: {m}" for p in MODEL for m in imported_modules(p)
           if (m == "campfire" or m.startswith("campfire.")) and m != "campfire.config"}
    bad |= {f"{p.name}: {m}" for p in MODEL for m in imported_modules(p) if m.split(".")[0] in ("bot", "recsys", "tests", "discord")}
    assert not bad


def test_bench_generator_imports_nothing_from_tests():
    assert not {m for m in imported_modules(ROOT / "bench" / "generator.py") if m == "tests" or m.startswith("tests.")}


def test_model_modules_and_functions_are_small():
    long_modules = {p.name: n for p in MODEL if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    long_functions = {}
    for p in MODEL:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long_functions[f"{p.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long_modules and not long_functions


def test_python_m_model_server_without_a_model_exits_2_alone(tmp_path):
    code = ("import sys\nfrom model.server import main\nrc = main(['--data-dir', sys.argv[1], '--port', '0'])\n"
            "print('cli imported' if 'campfire.cli' in sys.modules else 'cli not imported')\nsys.exit(rc)")
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no prepared model" in done.stdout
    assert "cli not imported" in done.stdout
