"""What may import what beyond the apps' layers: tests/ is imported by tests only, and the local
Slack stand-in by tests and benchmarks only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("inkwave", "monitoring", "orders", "notifications")
LOCAL_SLACK = "notifications.local_slack"


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` statement of the file names, at any depth
    (a function-level import counts as much as one at the top)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from notifications import local_slack` names the module as an attribute.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules_under(*folders: str) -> list[Path]:
    paths = [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]
    assert paths, f"no Python files under {folders}"
    return paths


def importers(paths: list[Path], target: str) -> list[str]:
    """The files (relative to the checkout) that import `target` or a module inside it."""
    return [
        str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        for path in paths
        if any(name == target or name.startswith(f"{target}.") for name in imported_modules(path))
    ]


def test_imported_modules_sees_every_form_of_import(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import tests.fakes\n"
        "from tests import servers\n"
        "def later():\n"
        "    from notifications import local_slack\n"
        "from . import sibling\n"
    )
    found = imported_modules(source)
    assert {"tests.fakes", "tests", "tests.servers", "notifications.local_slack"} <= found
    assert not any(name.endswith("sibling") for name in found)  # relative: not a project path
    assert importers([source], "tests") == [str(source)]
    assert importers([source], "notifications.local_slack") == [str(source)]
    assert importers([source], "test") == []  # a name that merely starts the same is not it


def test_neither_the_apps_nor_the_benchmarks_import_the_tests() -> None:
    assert importers(modules_under(*APPS, "bench"), "tests") == []


def test_no_production_module_imports_the_local_slack_server() -> None:
    production = [path for path in modules_under(*APPS) if path.stem != "local_slack"]
    assert importers(production, LOCAL_SLACK) == []
    # It is still the stand-in that the tests and the benchmarks use.
    assert importers(modules_under("tests"), LOCAL_SLACK)
    assert importers(modules_under("bench"), LOCAL_SLACK)


# --- one writer per state machine ----------------------------------------------------------

WRITES = {"create", "update", "bulk_create", "bulk_update", "get_or_create", "update_or_create"}
# Each state machine's rows, and the modules that may write them (deleting old rows is the
# retention prunes', which only delete).
WRITERS = {
    "Incident": {"monitoring/alerting/incidents.py"},
    "IncidentEvent": {"monitoring/alerting/incidents.py"},
    "Notification": {"notifications/outbox.py", "notifications/delivery.py"},
}


def model_writes(path: Path) -> set[str]:
    """The models of WRITERS this file writes through their manager: `Model.objects...` calls
    ending in a write (`Incident.objects.filter(...).update(...)` counts, a read does not)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in WRITES:
            continue
        base: ast.expr = node.func.value
        while isinstance(base, ast.Call | ast.Attribute):
            if (
                isinstance(base, ast.Attribute)
                and base.attr == "objects"
                and isinstance(base.value, ast.Name)
            ):
                if base.value.id in WRITERS:
                    found.add(base.value.id)
                break
            base = base.func if isinstance(base, ast.Call) else base.value
    return found


def test_model_writes_sees_chained_writes_and_not_reads(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "Incident.objects.filter(pk=1).update(status='resolved')\n"
        "IncidentEvent.objects.create(kind='note')\n"
        "Notification.objects.filter(pk=1).exists()\n"
        "rows = Notification.objects.filter(pk=1)\n"
    )
    assert model_writes(source) == {"Incident", "IncidentEvent"}


def test_each_state_machine_has_one_writer() -> None:
    strays = {
        f"{path.relative_to(ROOT)} writes {model}"
        for path in modules_under(*APPS)
        if "migrations" not in path.parts
        for model in model_writes(path)
        if str(path.relative_to(ROOT)) not in WRITERS[model]
    }
    assert strays == set()


def test_the_import_contracts_hold() -> None:
    """The layers between the apps, as `lint-imports` checks them in CI (pyproject.toml)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
