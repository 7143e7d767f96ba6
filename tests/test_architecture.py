"""roadwork_ml must never import dagster (the library works from a plain Python shell)."""

import ast
import subprocess
import sys
from pathlib import Path

import roadwork_ml

LIB = Path(roadwork_ml.__file__).parent


def test_no_dagster_import_statically():
    offenders = []
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(LIB)}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert offenders == []


def test_no_dagster_import_at_runtime():
    code = (
        "import sys, pkgutil, importlib, roadwork_ml\n"
        "for m in pkgutil.walk_packages(roadwork_ml.__path__, 'roadwork_ml.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0].startswith('dagster')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_unsafe_deserialization():
    for path in list(LIB.rglob("*.py")) + list((LIB.parent / "roadwork_assets").rglob("*.py")):
        text = path.read_text()
        assert "pickle.load" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


def test_pyflakes_clean():
    """Undefined names and unused imports are bugs waiting in rarely-run branches."""
    import shutil

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a test dependency: pip install -e '.[test]'"
    root = LIB.parent
    proc = subprocess.run(
        [ruff, "check", "--select", "F,E9", "--no-cache", "roadwork_ml", "roadwork_assets", "tests", "bench"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
