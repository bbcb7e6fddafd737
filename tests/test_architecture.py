"""Rules of the codebase that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_never_imports_training_or_demo():
    offenders = {}
    for path in (ROOT / "mvcm_core").rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("training", "demo")}
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders


def test_losses_never_import_models_and_models_never_import_losses_or_data():
    for folder, forbidden in (("losses", ("mvcm_core.models",)), ("models", ("mvcm_core.losses", "mvcm_core.data"))):
        for path in (ROOT / "mvcm_core" / folder).rglob("*.py"):
            assert not {m for m in imported_modules(path) if m.startswith(forbidden)}, path


def test_dicom_ingestion_and_inspect_do_not_load_torch():
    code = ("import sys, mvcm_core.data.dicom, mvcm_core.data.study, mvcm_core.cli.inspect_cmd; "
            "from mvcm_core.cli.main import main; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    markers = re.findall(r"<!-- setup:(\w+) -->\n```bash\n(.+)\n```", readme)
    assert [name for name, _ in markers] == ["app", "test"]
    app_line, test_line = markers[0][1], markers[1][1]
    assert app_line.endswith("python -m demo") and "pytest" in test_line
    ci = (ROOT / ".ci" / "run").read_text()
    assert "setup:test" in ci and "-eq 5" in ci


def test_no_module_is_far_over_the_size_budget():
    too_long = {str(p.relative_to(ROOT)): n for p in ROOT.glob("[mdt]*/**/*.py")
                if ".venv" not in p.parts and (n := len(p.read_text().splitlines())) > 450}
    assert not too_long, too_long
