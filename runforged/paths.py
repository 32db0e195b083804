"""Path safety for everything a request names: workspaces, paths inside them, run ids.

The layout and the run-id rules themselves are ``runforge_contract``'s; this module turns
a violation into the request's error."""

from __future__ import annotations

import os
from pathlib import Path

from runforge_contract.layout import INDEX_FILE, RUNS_DIR
from runforge_contract.run_ids import RUN_ID_PATTERN, is_valid_run_id, new_run_id
from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError


def _reject_unusable(what: str, value: str) -> None:
    if not value:
        raise RunforgeError(ErrorCode.INVALID_PATH, f"the {what} is empty")
    if "\0" in value:
        raise RunforgeError(
            ErrorCode.INVALID_PATH,
            f"the {what} contains a NUL byte",
            details={"path": value},
        )


def validate_workspace(path: str) -> Path:
    """The workspace folder a request names, symlinks resolved.

    It must be absolute (the client resolves relative paths against its own working
    directory; the daemon's working directory means nothing to the user), exist, and be a
    directory.
    """
    _reject_unusable("workspace path", path)
    if not os.path.isabs(path):
        raise RunforgeError(
            ErrorCode.INVALID_PATH,
            f"workspace path {path!r} is not absolute",
            remediation="pass an absolute path (runforgectl does this for you)",
            details={"path": path},
        )
    resolved = Path(os.path.realpath(path))
    if not resolved.exists():
        raise RunforgeError(
            ErrorCode.WORKSPACE_NOT_FOUND,
            f"workspace {path} does not exist",
            details={"path": path},
        )
    if not resolved.is_dir():
        raise RunforgeError(
            ErrorCode.INVALID_PATH,
            f"workspace {path} is not a directory",
            details={"path": path},
        )
    return resolved


def resolve_inside(workspace: Path, candidate: str) -> Path:
    """``candidate`` (relative to the workspace, or absolute) with symlinks resolved, refused
    unless the result stays inside the workspace. The target need not exist yet."""
    _reject_unusable("path", candidate)
    root = Path(os.path.realpath(workspace))
    resolved = Path(os.path.realpath(root / candidate))
    if resolved != root and root not in resolved.parents:
        raise RunforgeError(
            ErrorCode.INVALID_PATH,
            f"{candidate} is outside the workspace {root}",
            remediation="name a file inside the workspace",
            details={"path": candidate, "resolved": str(resolved), "workspace": str(root)},
        )
    return resolved


def validate_run_id(run_id: str) -> str:
    """``run_id`` unchanged if it can safely name a folder under ``.ml/runs``."""
    if not is_valid_run_id(run_id):
        raise RunforgeError(
            ErrorCode.INVALID_RUN_ID,
            f"{run_id!r} is not a valid run id",
            remediation="run ids look like 20240131-142501-1a2b3c4d; see `runforgectl runs`",
            details={"run_id": run_id},
        )
    return run_id


def runs_dir(workspace: Path) -> Path:
    return workspace / RUNS_DIR


def run_dir(workspace: Path, run_id: str) -> Path:
    """The folder of ``run_id``; the id is validated so the result is always a direct child
    of :func:`runs_dir`."""
    return runs_dir(workspace) / validate_run_id(run_id)


def index_path(workspace: Path) -> Path:
    return workspace / INDEX_FILE


__all__ = [
    "INDEX_FILE",
    "RUNS_DIR",
    "RUN_ID_PATTERN",
    "index_path",
    "new_run_id",
    "resolve_inside",
    "run_dir",
    "runs_dir",
    "validate_run_id",
    "validate_workspace",
]
