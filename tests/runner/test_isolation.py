"""The runner loads only the standard library, numpy and scikit-learn (with what those
pull in): none of the daemon's dependencies, none of the daemon's packages."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.runner.conftest import SMALL_DATASET, Workspace

DAEMON_ONLY = ("zmq", "msgspec", "psutil", "structlog", "runforged", "runforge_protocol")
RUNNER_PACKAGE = Path(__file__).resolve().parents[2] / "runforge_runner"

# Runs ``python -m runforge_runner ...`` for real, then reports which modules were loaded.
LOADED_MODULES_AFTER_RUN = """
import json, os, runpy, sys
sys.argv = ["runforge_runner", *sys.argv[1:]]
def leave(code):  # a train run ends with os._exit: look at the modules first
    raise SystemExit(code)
os._exit = leave
try:
    runpy.run_module("runforge_runner", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
print(json.dumps({"exit": code, "loaded": loaded}))
"""


def loaded_modules(workspace: Workspace, *args: str) -> dict[str, object]:
    env = workspace.environment(SMALL_DATASET, None)
    completed = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES_AFTER_RUN, *args],
        cwd=workspace.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def test_a_training_run_loads_none_of_the_daemons_modules(workspace: Workspace) -> None:
    # Every family's code is imported by any training run; the forest also loads joblib.
    report = loaded_modules(
        workspace,
        *workspace.train_args("isolated", "--model", "random_forest", "--profile", "fast"),
    )
    assert report["exit"] == 0
    loaded = report["loaded"]
    assert isinstance(loaded, list)
    assert {"sklearn", "numpy", "joblib", "runforge_runner.fitting"} <= set(loaded)
    forbidden = sorted(name for name in loaded if name.split(".")[0] in DAEMON_ONLY)
    assert forbidden == []


def test_inspect_commands_load_none_of_the_daemons_modules(workspace: Workspace) -> None:
    report = loaded_modules(workspace, "inspect", "--dataset", str(SMALL_DATASET))
    assert report["exit"] == 0
    loaded = report["loaded"]
    assert isinstance(loaded, list)
    assert not [name for name in loaded if name.split(".")[0] in DAEMON_ONLY]


def top_level_imports(source: Path) -> set[str]:
    """Absolute imports of a module, as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_package_source_imports_only_itself_the_stdlib_numpy_and_sklearn() -> None:
    allowed = set(sys.stdlib_module_names) | {
        "numpy",
        "sklearn",
        "runforge_runner",
        "runforge_contract",
    }
    for source in RUNNER_PACKAGE.glob("*.py"):
        for name in top_level_imports(source):
            assert name.split(".")[0] in allowed, f"{source.name} imports {name}"


def test_the_contract_package_imports_only_itself_and_the_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) | {"runforge_contract"}
    for source in (RUNNER_PACKAGE.parent / "runforge_contract").glob("*.py"):
        for name in top_level_imports(source):
            assert name.split(".")[0] in allowed, f"{source.name} imports {name}"


def test_the_trainer_helper_needs_only_the_standard_library() -> None:
    for name in top_level_imports(RUNNER_PACKAGE / "contract.py"):
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or top == "runforge_contract", name


def test_the_package_imports_under_a_path_holding_only_a_symlink_to_it(
    workspace: Workspace, tmp_path: Path
) -> None:
    """How the daemon exposes the runner to a foreign interpreter: a directory containing
    just a ``runforge_runner`` symlink (and one to the ``runforge_contract`` it imports) on
    PYTHONPATH. With no site-packages at all (-S), the stdlib-only ``inspect`` still runs
    from there."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "runforge_runner").symlink_to(RUNNER_PACKAGE)
    (shim / "runforge_contract").symlink_to(RUNNER_PACKAGE.parent / "runforge_contract")
    env = workspace.environment(SMALL_DATASET, None)
    env["PYTHONPATH"] = str(shim)
    completed = subprocess.run(
        [
            sys.executable,
            "-S",
            "-u",
            "-m",
            "runforge_runner",
            "inspect",
            "--dataset",
            str(SMALL_DATASET),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["num_rows"] == 150
